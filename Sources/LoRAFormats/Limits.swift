// Limits: the bounds every count from a flag, config or file is checked against before it sizes an allocation
// or a loop, and the memory check that runs before the large allocations (README: Limits).
import Foundation

public enum Limits {
    /// Far beyond any useful value, low enough that products with other bounded sizes cannot overflow.
    public static let maxBatchSize = 1 << 16
    public static let maxGradAccum = 1 << 16
    public static let maxEpochs = 1 << 20
    public static let maxSteps = 1 << 40
    public static let maxThreads = 1024

    /// Physical memory of this machine, in bytes.
    public static var physicalMemory: Int {
        let pages = sysconf(Int32(_SC_PHYS_PAGES)), size = sysconf(Int32(_SC_PAGESIZE))
        guard pages > 0, size > 0 else { return Int.max }
        let (b, o) = pages.multipliedReportingOverflow(by: size)
        return o ? Int.max : b
    }

    /// a × b × …, or nil when the product overflows an Int (or any factor is negative).
    public static func product(_ xs: Int...) -> Int? {
        var p = 1
        for x in xs {
            guard x >= 0 else { return nil }
            let (r, o) = p.multipliedReportingOverflow(by: x)
            if o { return nil }
            p = r
        }
        return p
    }

    /// a + b + …, or nil when any term is nil or the sum overflows an Int.
    public static func sum(_ xs: Int?...) -> Int? {
        var t = 0
        for x in xs {
            guard let x else { return nil }
            let (r, o) = t.addingReportingOverflow(x)
            if o { return nil }
            t = r
        }
        return t
    }

    /// Refuses a plan whose estimated memory (nil: overflowed) exceeds this machine's physical memory, naming
    /// what needs it and the flags that shrink it.
    public static func checkMemory(_ bytes: Int?, for what: String, fix: String) throws {
        let have = physicalMemory
        guard let b = bytes, b <= have else {
            let need = bytes.map { String(format: "%.1f GB", Double($0) / 1e9) } ?? "more than 2^63 bytes"
            throw MemoryLimitError(description: "\(what) needs \(need) but this machine has \(String(format: "%.1f GB", Double(have) / 1e9)) of memory; \(fix)")
        }
    }
}

public struct MemoryLimitError: Error, CustomStringConvertible, ToolError {
    public let description: String
}
