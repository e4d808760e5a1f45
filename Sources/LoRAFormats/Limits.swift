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

    /// The memory a run may use, in bytes, and where that figure comes from: LORA_MEMORY_LIMIT when set (e.g.
    /// "12GB", for a box shared with other jobs), else the smaller of /proc/meminfo's MemAvailable and the room
    /// left under a cgroup v2 memory.max (containers, Slurm), else physical memory.
    public static var availableMemory: (bytes: Int, source: String) {
        let env = ProcessInfo.processInfo.environment
        if let v = env["LORA_MEMORY_LIMIT"], let b = ShardedWriter.parseSize(v) { return (b, "LORA_MEMORY_LIMIT=\(v)") }
        var best = (physicalMemory, "physical memory")
        func number(_ path: String) -> Int? {
            (try? String(contentsOfFile: path, encoding: .utf8)).flatMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
        }
        if let info = try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8),
           let line = info.split(separator: "\n").first(where: { $0.hasPrefix("MemAvailable:") }),
           let kb = line.split(separator: " ").dropFirst().first.flatMap({ Int($0) }), let b = product(kb, 1024), b < best.0 {
            best = (b, "MemAvailable in /proc/meminfo")
        }
        if let max = number("/sys/fs/cgroup/memory.max"), let cur = number("/sys/fs/cgroup/memory.current"), max - cur < best.0 {
            best = (Swift.max(0, max - cur), "the cgroup's memory.max")
        }
        return best
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
}

public struct MemoryLimitError: Error, CustomStringConvertible, ToolError {
    public let description: String
    public init(description: String) { self.description = description }
}
