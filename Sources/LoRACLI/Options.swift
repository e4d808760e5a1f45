// Options: flag groups shared by several executables, so each flag is spelled and documented once.
import ArgumentParser
import LoRAShared

public struct CommonOptions: ParsableArguments {
    @Option(help: "Seed for every random choice; the same inputs and seed give the same bytes.")
    public var seed: UInt64 = 0

    @Option(help: "Threads for the matrix work (0: one per core).")
    public var threads: Int = 0

    @Flag(name: .shortAndLong, help: "No progress or log lines on stderr (errors still print).")
    public var quiet = false

    public init() {}

    public func apply() {
        Log.quiet = quiet
        setBLASThreads(threads)
    }
}

extension QuantType: ExpressibleByArgument {}
extension LoRAInit: ExpressibleByArgument {}
extension LRSchedule: ExpressibleByArgument {}

/// Parses "5GB", "500MB", "2GiB" or a byte count.
public struct ByteSize: ExpressibleByArgument, Sendable {
    public let bytes: Int
    public init?(argument: String) {
        guard let b = ShardedWriter.parseSize(argument) else { return nil }
        bytes = b
    }
    public init(bytes: Int) { self.bytes = bytes }
    public var defaultValueDescription: String { "\(bytes)" }
}
