// Profiler: wall-time totals per named section, on when LORA_PROFILE=1, printed to stderr by `report()`.
// Used to say where a step's time goes (GEMM vs attention vs dequantization vs head).
import Foundation

public final class Profiler: @unchecked Sendable {
    public static let shared = Profiler()
    public let enabled = ProcessInfo.processInfo.environment["LORA_PROFILE"] == "1"
    private var totals: [String: (seconds: Double, calls: Int, flops: Double)] = [:]
    private let lock = NSLock()

    /// Times `body` under `label`; `flops` (optional) lets the report show GFLOP/s.
    @inline(__always)
    public func measure<T>(_ label: String, flops: Double = 0, _ body: () throws -> T) rethrows -> T {
        guard enabled else { return try body() }
        let t = DispatchTime.now().uptimeNanoseconds
        let r = try body()
        let dt = Double(DispatchTime.now().uptimeNanoseconds - t) * 1e-9
        lock.lock()
        var e = totals[label] ?? (0, 0, 0)
        e.seconds += dt; e.calls += 1; e.flops += flops
        totals[label] = e
        lock.unlock()
        return r
    }

    public func report() {
        guard enabled else { return }
        lock.lock(); defer { lock.unlock() }
        let total = totals.values.reduce(0) { $0 + $1.seconds }
        var out = "profile (seconds, share, calls, GFLOP/s):\n"
        for (k, v) in totals.sorted(by: { $0.value.seconds > $1.value.seconds }) {
            let rate = v.flops > 0 ? String(format: " %.1f GFLOP/s", v.flops / v.seconds / 1e9) : ""
            out += String(format: "  %-22@ %8.3f %5.1f%% %6d%@\n", k as NSString, v.seconds, 100 * v.seconds / max(total, 1e-9), v.calls, rate as NSString)
        }
        FileHandle.standardError.write(Data(out.utf8))
    }

    public func reset() { lock.lock(); totals = [:]; lock.unlock() }
}
