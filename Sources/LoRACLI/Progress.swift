// Progress: a bar with rate and ETA on stderr when it is a terminal, plain periodic lines when it is not
// (cron logs), nothing with --quiet.
import Foundation

public final class ProgressBar {
    let total: Int
    let label: String
    let unit: String
    let start = Date()
    var lastPrint: Date
    let isTTY = isatty(2) != 0
    /// The count at the first update: callers often create the bar on their first progress callback, so the
    /// rate counts only the work seen since.
    var firstDone: Int?

    public init(total: Int, label: String, unit: String = "") {
        self.total = total
        self.label = label
        self.unit = unit
        // A terminal gets its bar at once; a log gets its first line after one interval.
        lastPrint = isTTY ? .distantPast : start
    }

    public func update(_ done: Int, detail: String = "") {
        guard !Log.quiet else { return }
        if firstDone == nil { firstDone = done }
        let now = Date()
        let finished = done >= total
        let interval = isTTY ? 0.1 : 10.0
        guard finished || now.timeIntervalSince(lastPrint) >= interval else { return }
        lastPrint = now
        let elapsed = now.timeIntervalSince(start)
        let rate = elapsed >= 0.5 ? Double(done - firstDone!) / elapsed : 0
        let eta = rate > 0 ? Double(total - done) / rate : 0
        let pct = total > 0 ? Double(done) / Double(total) : 1
        let stats = rate > 0
            ? String(format: "%d/%d%@ %.1f/s ETA %@", done, total, unit, rate, ProgressBar.clock(eta))
            : String(format: "%d/%d%@", done, total, unit)
        if isTTY {
            let width = 30
            let filled = Int(pct * Double(width))
            let bar = String(repeating: "█", count: filled) + String(repeating: "·", count: width - filled)
            let line = "\r\(label) \(bar) \(stats) \(detail.prefix(40))"
            FileHandle.standardError.write(Data((line + "\u{1B}[K" + (finished ? "\n" : "")).utf8))
        } else {
            FileHandle.standardError.write(Data("\(label): \(stats)\(detail.isEmpty ? "" : " " + detail)\n".utf8))
        }
    }

    static func clock(_ s: Double) -> String {
        let t = Int(s.rounded())
        return t >= 3600 ? String(format: "%d:%02d:%02d", t / 3600, t / 60 % 60, t % 60) : String(format: "%d:%02d", t / 60, t % 60)
    }
}
