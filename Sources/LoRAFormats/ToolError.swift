// ToolError: the marker every library error adopts. Its description is the one-line message a user sees after
// `error: ` (what, where, and the fix); the executables print it and exit 1.

import Foundation

public protocol ToolError: Error, CustomStringConvertible {}

extension SafetensorsError: ToolError {}
extension FileError: ToolError {}
extension ConfigError: ToolError {}
extension WeightStoreError: ToolError {}
extension JSONParseError: ToolError {}
extension JSONLError: ToolError {}
extension ComputeError: ToolError {}
extension UsageError: ToolError {}

/// A usage error: a bad flag, flag value or config key (exit 64).
/// Only one input of a command can be standard input.
public final class StdinClaim: @unchecked Sendable {
    public static let shared = StdinClaim()
    public init() {}
    private var owner: String?
    private let lock = NSLock()

    public func claim(_ what: String) throws {
        lock.lock(); defer { lock.unlock() }
        if let o = owner {
            throw UsageError("both \(o) and \(what) ask to read standard input ('-'); only one input per command can be '-'")
        }
        owner = what
    }
}

public struct UsageError: Error, CustomStringConvertible {
    public let description: String
    public init(_ message: String) { description = message }
}
