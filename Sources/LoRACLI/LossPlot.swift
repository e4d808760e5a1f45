// LossPlot: the loss curve lora-train keeps as OUT/loss.svg: train loss per logged step (line and points), validation
// loss where evaluated (its own markers and line), the learning rate on a second axis (dashed, its own scale and
// colour), round-number ticks, a legend and a title. Dependency-free SVG 1.1; the same points give the same bytes.
// Non-finite values are skipped; long runs are thinned to at most `maxPoints` per series (the lowest and highest
// point of each stretch, so spikes stay visible). Also the terminal sparkline of the progress line.
import Foundation
import LoRAShared

public struct LossPlot {
    public var title: String
    public var points: [LogPoint]
    public var width = 800.0, height = 450.0
    /// Per series, after thinning.
    public var maxPoints = 2000
    /// Markers on the train line up to this many points (beyond, the line alone).
    public var maxMarkers = 150

    public init(title: String, points: [LogPoint]) {
        self.title = title
        self.points = points
    }

    /// "lora-train: MODEL · r R · lr LR · N steps", MODEL the model folder's name.
    public static func title(model: String, r: Int, lr: Double, steps: Int) -> String {
        let name = URL(fileURLWithPath: model).standardizedFileURL.lastPathComponent
        return "lora-train: \(name) · r \(r) · lr \(LossPlot.number(lr)) · \(steps) step\(steps == 1 ? "" : "s")"
    }

    /// Writes the SVG atomically (temporary name in the same folder, then rename).
    public func write(to path: String) throws {
        try AtomicFile.write(svg(), to: path)
    }

    /// The loss curve of the lora-train output folder an adapter lives in: `ADAPTER/loss.svg`, or for a checkpoint
    /// (`OUT/checkpoints/step-N`) `OUT/loss.svg`; nil when there is none (or the adapter is '-' or a file).
    public static func curve(forAdapter adapter: String) -> String? {
        guard adapter != "-" else { return nil }
        var dir = adapter
        while dir.count > 1 && dir.hasSuffix("/") { dir.removeLast() }
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: dir, isDirectory: &isDir), isDir.boolValue else { return nil }
        var candidates = [dir + "/loss.svg"]
        let parent = (dir as NSString).deletingLastPathComponent
        if (dir as NSString).lastPathComponent.hasPrefix("step-"), (parent as NSString).lastPathComponent == "checkpoints" {
            let out = (parent as NSString).deletingLastPathComponent
            candidates.append((out.isEmpty ? "." : out) + "/loss.svg")
        }
        return candidates.first { FileManager.default.isReadableFile(atPath: $0) }
    }

    // MARK: drawing

    typealias XY = (x: Double, y: Double)

    public func svg() -> String {
        let train: [XY] = points.compactMap { $0.loss.isFinite ? (Double($0.step), $0.loss) : nil }
        let valid: [XY] = points.compactMap { p in p.validLoss.flatMap { $0.isFinite ? (Double(p.step), $0) : nil } }
        let lrs: [XY] = points.compactMap { $0.lr.isFinite ? (Double($0.step), $0.lr) : nil }
        let all = train + valid
        // Plot area.
        let left = 72.0, right = width - 84, top = 70.0, bottom = height - 52
        let steps = (train + valid + lrs).map(\.x)
        let xAxis = Axis(lo: steps.min() ?? 0, hi: steps.max() ?? 1, integer: true, floorAtZero: false)
        let yAxis = Axis(lo: all.map(\.y).min() ?? 0, hi: all.map(\.y).max() ?? 1, integer: false, floorAtZero: false)
        let lrAxis = Axis(lo: 0, hi: max(lrs.map(\.y).max() ?? 0, 0), integer: false, floorAtZero: true)
        func px(_ x: Double) -> Double { left + (x - xAxis.lo) / (xAxis.hi - xAxis.lo) * (right - left) }
        func py(_ y: Double, _ a: Axis) -> Double { bottom - (y - a.lo) / (a.hi - a.lo) * (bottom - top) }
        func f(_ v: Double) -> String { String(format: "%.1f", v) }

        let trainColor = "#1f77b4", validColor = "#d62728", lrColor = "#2ca02c"
        var s = """
            <?xml version="1.0" encoding="UTF-8"?>
            <svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="\(Int(width))" height="\(Int(height))" \
            viewBox="0 0 \(Int(width)) \(Int(height))" font-family="Helvetica, Arial, sans-serif" font-size="12">
            <title>\(LossPlot.escape(title))</title>
            <rect x="0" y="0" width="\(Int(width))" height="\(Int(height))" fill="#ffffff"/>
            <text x="\(f(width / 2))" y="22" text-anchor="middle" font-size="15" font-weight="bold">\(LossPlot.escape(title))</text>

            """
        // Subtitle: where the curve ends.
        var sub: [String] = []
        if let t = points.last(where: { $0.loss.isFinite }) { sub.append("train loss \(String(format: "%.4f", t.loss)) at step \(t.step)") }
        if let v = points.last(where: { $0.validLoss?.isFinite == true }) {
            sub.append("valid loss \(String(format: "%.4f", v.validLoss!)) at step \(v.step)")
        }
        if sub.isEmpty { sub.append("no logged step yet") }
        s += "<text x=\"\(f(width / 2))\" y=\"40\" text-anchor=\"middle\" fill=\"#555555\">\(LossPlot.escape(sub.joined(separator: ", ")))</text>\n"

        // Grid and axes.
        s += "<g id=\"grid\" stroke=\"#e6e6e6\" stroke-width=\"1\">\n"
        for v in yAxis.ticks { s += "<line x1=\"\(f(left))\" y1=\"\(f(py(v, yAxis)))\" x2=\"\(f(right))\" y2=\"\(f(py(v, yAxis)))\"/>\n" }
        for v in xAxis.ticks { s += "<line x1=\"\(f(px(v)))\" y1=\"\(f(top))\" x2=\"\(f(px(v)))\" y2=\"\(f(bottom))\"/>\n" }
        s += "</g>\n"
        s += "<rect x=\"\(f(left))\" y=\"\(f(top))\" width=\"\(f(right - left))\" height=\"\(f(bottom - top))\" fill=\"none\" stroke=\"#333333\"/>\n"
        s += "<g id=\"x-axis\" text-anchor=\"middle\">\n"
        for v in xAxis.ticks {
            s += "<line x1=\"\(f(px(v)))\" y1=\"\(f(bottom))\" x2=\"\(f(px(v)))\" y2=\"\(f(bottom + 5))\" stroke=\"#333333\"/>"
            s += "<text x=\"\(f(px(v)))\" y=\"\(f(bottom + 18))\">\(xAxis.label(v))</text>\n"
        }
        s += "<text x=\"\(f((left + right) / 2))\" y=\"\(f(height - 12))\">step</text>\n</g>\n"
        s += "<g id=\"loss-axis\" text-anchor=\"end\">\n"
        for v in yAxis.ticks {
            s += "<line x1=\"\(f(left - 5))\" y1=\"\(f(py(v, yAxis)))\" x2=\"\(f(left))\" y2=\"\(f(py(v, yAxis)))\" stroke=\"#333333\"/>"
            s += "<text x=\"\(f(left - 8))\" y=\"\(f(py(v, yAxis) + 4))\">\(yAxis.label(v))</text>\n"
        }
        let midY = (top + bottom) / 2
        s += "<text x=\"16\" y=\"\(f(midY))\" text-anchor=\"middle\" transform=\"rotate(-90 16 \(f(midY)))\">loss</text>\n</g>\n"
        if !lrs.isEmpty {
            s += "<g id=\"lr-axis\" text-anchor=\"start\" fill=\"\(lrColor)\">\n"
            for v in lrAxis.ticks {
                s += "<line x1=\"\(f(right))\" y1=\"\(f(py(v, lrAxis)))\" x2=\"\(f(right + 5))\" y2=\"\(f(py(v, lrAxis)))\" stroke=\"\(lrColor)\"/>"
                s += "<text x=\"\(f(right + 8))\" y=\"\(f(py(v, lrAxis) + 4))\">\(lrAxis.label(v))</text>\n"
            }
            let x = width - 14
            s += "<text x=\"\(f(x))\" y=\"\(f(midY))\" text-anchor=\"middle\" transform=\"rotate(90 \(f(x)) \(f(midY)))\">learning rate</text>\n</g>\n"
        }

        // Series: learning rate below, then train, then validation on top.
        func polyline(_ id: String, _ pts: [XY], _ axis: Axis, _ attrs: String) -> String {
            guard !pts.isEmpty else { return "" }
            let coords = pts.map { "\(f(px($0.x))),\(f(py($0.y, axis)))" }.joined(separator: " ")
            return "<polyline id=\"\(id)\" fill=\"none\" \(attrs) points=\"\(coords)\"/>\n"
        }
        let lrDrawn = LossPlot.thin(lrs, maxPoints), trainDrawn = LossPlot.thin(train, maxPoints), validDrawn = LossPlot.thin(valid, maxPoints)
        s += polyline("lr", lrDrawn, lrAxis, "stroke=\"\(lrColor)\" stroke-width=\"1.5\" stroke-dasharray=\"6 4\"")
        s += polyline("train", trainDrawn, yAxis, "stroke=\"\(trainColor)\" stroke-width=\"1.5\" stroke-linejoin=\"round\"")
        if trainDrawn.count <= maxMarkers {
            s += "<g id=\"train-points\" fill=\"\(trainColor)\">\n"
            for p in trainDrawn { s += "<circle class=\"train-point\" cx=\"\(f(px(p.x)))\" cy=\"\(f(py(p.y, yAxis)))\" r=\"2.5\"/>\n" }
            s += "</g>\n"
        }
        s += polyline("valid", validDrawn, yAxis, "stroke=\"\(validColor)\" stroke-width=\"1.5\"")
        if !validDrawn.isEmpty {
            s += "<g id=\"valid-points\" fill=\"#ffffff\" stroke=\"\(validColor)\" stroke-width=\"1.5\">\n"
            for p in validDrawn {
                s += "<rect class=\"valid-point\" x=\"\(f(px(p.x) - 3.5))\" y=\"\(f(py(p.y, yAxis) - 3.5))\" width=\"7\" height=\"7\"/>\n"
            }
            s += "</g>\n"
        }

        // Legend, above the plot area.
        var entries: [(String, String)] = [("train loss", "<line x1=\"0\" y1=\"0\" x2=\"24\" y2=\"0\" stroke=\"\(trainColor)\" stroke-width=\"1.5\"/><circle cx=\"12\" cy=\"0\" r=\"2.5\" fill=\"\(trainColor)\"/>")]
        if !valid.isEmpty {
            entries.append(("valid loss", "<line x1=\"0\" y1=\"0\" x2=\"24\" y2=\"0\" stroke=\"\(validColor)\" stroke-width=\"1.5\"/><rect x=\"8.5\" y=\"-3.5\" width=\"7\" height=\"7\" fill=\"#ffffff\" stroke=\"\(validColor)\" stroke-width=\"1.5\"/>"))
        }
        if !lrs.isEmpty {
            entries.append(("learning rate (right axis)", "<line x1=\"0\" y1=\"0\" x2=\"24\" y2=\"0\" stroke=\"\(lrColor)\" stroke-width=\"1.5\" stroke-dasharray=\"6 4\"/>"))
        }
        s += "<g id=\"legend\">\n"
        var x = left
        for (label, sample) in entries {
            s += "<g transform=\"translate(\(f(x)) \(f(top - 14)))\">\(sample)<text x=\"30\" y=\"4\">\(LossPlot.escape(label))</text></g>\n"
            x += 30 + Double(label.count) * 6.5 + 24
        }
        s += "</g>\n</svg>\n"
        return s
    }

    /// At most `maxCount` points: the lowest and highest of each stretch, in step order, and the last point.
    static func thin(_ pts: [XY], _ maxCount: Int) -> [XY] {
        guard pts.count > maxCount, maxCount >= 4 else { return pts }
        let buckets = (maxCount - 1) / 2
        let size = (pts.count + buckets - 1) / buckets
        var out: [XY] = []
        var start = 0
        while start < pts.count {
            let end = min(pts.count, start + size)
            var lo = start, hi = start
            for i in start..<end {
                if pts[i].y < pts[lo].y { lo = i }
                if pts[i].y > pts[hi].y { hi = i }
            }
            for i in Set([lo, hi]).sorted() { out.append(pts[i]) }
            start = end
        }
        if let l = pts.last, out.last.map({ $0.x != l.x }) ?? true { out.append(l) }
        return out
    }

    /// A value axis spanning round numbers: 1, 2 or 5 × 10^k between ticks, about five of them.
    struct Axis {
        var lo: Double, hi: Double, step: Double
        var ticks: [Double]
        let scientific: Bool, decimals: Int

        init(lo rawLo: Double, hi rawHi: Double, integer: Bool, floorAtZero: Bool) {
            var a = rawLo.isFinite ? rawLo : 0, b = rawHi.isFinite ? rawHi : 1
            if a > b { swap(&a, &b) }
            if b - a <= max(abs(a), abs(b)) * 1e-9 {
                // One value (one point, or a constant): a span around it.
                let pad = integer ? 1 : (a == 0 ? 1 : abs(a) * 0.1)
                a = floorAtZero ? 0 : a - pad
                b += pad
            }
            if floorAtZero { a = 0 }
            var step = LossPlot.niceStep((b - a) / 5)
            if integer { step = max(1, step.rounded()) }
            let k0 = (a / step).rounded(.down), k1 = (b / step).rounded(.up)
            lo = k0 * step
            hi = max(k1, k0 + 1) * step
            self.step = step
            ticks = stride(from: k0, through: max(k1, k0 + 1), by: 1).map { $0 * step + 0 }
            scientific = !integer && step < 1e-3
            decimals = integer ? 0 : max(0, Int(-(log10(step) + 1e-9).rounded(.down)))
        }

        func label(_ v: Double) -> String {
            if abs(v) < step * 1e-6 { return "0" }
            if scientific { return LossPlot.scientific(v) }
            return String(format: "%.\(decimals)f", v)
        }
    }

    static func niceStep(_ raw: Double) -> Double {
        guard raw > 0, raw.isFinite else { return 1 }
        let mag = pow(10, (log10(raw)).rounded(.down))
        let f = raw / mag
        return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * mag
    }

    /// A compact number: 0.5, 12, 2e-4, 1.5e-5.
    static func number(_ v: Double) -> String {
        guard v.isFinite, v != 0 else { return "0" }
        if abs(v) >= 1e-3 && abs(v) < 1e6 {
            var s = String(format: "%.6f", v)
            while s.hasSuffix("0") { s.removeLast() }
            if s.hasSuffix(".") { s.removeLast() }
            return s
        }
        return scientific(v)
    }

    /// Mantissa (up to 3 decimals) and exponent: 2e-4, 1.5e-3.
    static func scientific(_ v: Double) -> String {
        guard v.isFinite, v != 0 else { return "0" }
        var e = Int(log10(abs(v)).rounded(.down))
        var m = v / pow(10, Double(e))
        m = (m * 1000).rounded() / 1000
        if abs(m) >= 10 { m /= 10; e += 1 }
        var ms = String(format: "%.3f", m)
        while ms.hasSuffix("0") { ms.removeLast() }
        if ms.hasSuffix(".") { ms.removeLast() }
        return "\(ms)e\(e)"
    }

    /// Text for XML content and attribute values.
    public static func escape(_ s: String) -> String {
        var out = ""
        out.reserveCapacity(s.utf8.count)
        for c in s.unicodeScalars {
            switch c {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&apos;"
            // Control characters other than tab, newline and carriage return are not allowed in XML 1.0.
            case _ where c.value < 0x20 && c != "\t" && c != "\n" && c != "\r": out += "?"
            case _ where (0xFFFE...0xFFFF).contains(c.value): out += "?"
            default: out.unicodeScalars.append(c)
            }
        }
        return out
    }
}

public enum Sparkline {
    static let bars: [Character] = ["▁", "▂", "▃", "▄", "▅", "▆", "▇", "█"]

    /// The last `count` finite values as bars scaled to their own min/max (a flat series sits in the middle).
    public static func render(_ values: [Double], count: Int = 16) -> String {
        let v = Array(values.filter(\.isFinite).suffix(count))
        guard let lo = v.min(), let hi = v.max() else { return "" }
        let span = hi - lo
        return String(v.map { x -> Character in
            guard span > 0 else { return bars[3] }
            return bars[min(7, max(0, Int(((x - lo) / span * 7).rounded())))]
        })
    }
}
