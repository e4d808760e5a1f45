// Evaluator: loss and perplexity of a model (optionally with LoRA) over tokenized examples. Long texts are cut
// into windows of `seqLen` advancing by `stride` (each window scores only its new tokens, as the Hugging Face
// perplexity recipe); other examples are truncated to `seqLen`. Windows are batched by length.

public struct EvalOptions: Sendable {
    public var seqLen: Int
    public var stride: Int
    public var batchSize: Int
    public init(seqLen: Int, stride: Int? = nil, batchSize: Int = 4) {
        self.seqLen = seqLen
        self.stride = stride ?? seqLen
        self.batchSize = batchSize
    }
}

public struct EvalResult: Sendable {
    public var nll = 0.0
    public var tokens = 0
    public var examples = 0
    public var windows = 0
    public var truncated = 0
    public init() {}
    public var loss: Double { tokens > 0 ? nll / Double(tokens) : .nan }
    public var perplexity: Double { Foundation_exp(loss) }
}

/// A sequence ready for the model: ids and the label of each position (-100: not scored).
public struct Window: Sendable {
    public var ids: [Int32]
    public var labels: [Int32]
    /// The data line it comes from (0: unknown), for errors.
    public var line = 0
}

public enum EvalError: Error, CustomStringConvertible, ToolError {
    /// The loss of a batch is NaN or infinite: never printed as a result (it is not even valid JSON).
    case nonFinite(lines: [Int], loss: Double)

    public var description: String {
        switch self {
        case .nonFinite(let lines, let loss):
            let at = lines.filter { $0 > 0 }.map(String.init).joined(separator: ", ")
            return "the loss is \(loss) on the windows of data line\(lines.count == 1 ? "" : "s") \(at.isEmpty ? "?" : at): the model or adapter holds non-finite or overflowing weights; evaluate the base alone to tell which"
        }
    }
}

public enum Evaluator {
    /// Windows of one example. A text longer than seqLen becomes overlapping windows; others are truncated.
    public static func windows(_ e: Example, _ o: EvalOptions) -> (windows: [Window], truncated: Bool) {
        func labels(_ ids: ArraySlice<Int32>, _ tg: ArraySlice<Bool>, from: Int) -> [Int32] {
            var l = [Int32](repeating: -100, count: ids.count)
            for (k, (id, t)) in zip(ids, tg).enumerated() where t && k >= from { l[k] = id }
            return l
        }
        let n = e.ids.count
        if n <= o.seqLen {
            return ([Window(ids: e.ids, labels: labels(e.ids[...], e.targets[...], from: 0), line: e.line)], false)
        }
        if e.format != .text {
            let ids = e.ids[..<o.seqLen], tg = e.targets[..<o.seqLen]
            return ([Window(ids: Array(ids), labels: labels(ids, tg, from: 0), line: e.line)], true)
        }
        var out: [Window] = []
        var prevEnd = 0, begin = 0
        while true {
            let end = min(begin + o.seqLen, n)
            let trg = end - prevEnd
            let ids = e.ids[begin..<end], tg = e.targets[begin..<end]
            out.append(Window(ids: Array(ids), labels: labels(ids, tg, from: ids.count - trg), line: e.line))
            prevEnd = end
            if end == n { break }
            begin += o.stride
        }
        return (out, false)
    }

    /// Batches windows (longest first, so padding is small) and runs the model over them.
    public static func evaluate(_ model: Transformer, windows ws: [Window], options o: EvalOptions,
                                progress: ((Int, Int) -> Void)? = nil) throws -> (nll: Double, tokens: Int) {
        let order = ws.indices.sorted { ws[$0].ids.count > ws[$1].ids.count }
        let totalTokens = ws.reduce(0) { $0 + $1.ids.count }
        var done = 0, nll = 0.0, count = 0
        var i = 0
        let bs = min(o.batchSize, max(1, order.count))
        while i < order.count {
            let group = order[i..<min(order.count, i + bs)].map { ws[$0] }
            let T = group.map(\.ids.count).max()!
            var tokens = [Int32](repeating: 0, count: group.count * T)
            var labels = [Int32](repeating: -100, count: group.count * T)
            for (b, w) in group.enumerated() {
                for k in 0..<w.ids.count { tokens[b * T + k] = w.ids[k]; labels[b * T + k] = w.labels[k] }
            }
            let out = try model.forward(TokenBatch(tokens: tokens, labels: labels, lengths: group.map(\.ids.count), batch: group.count, seq: T))
            if !out.nllSum.isFinite {
                throw EvalError.nonFinite(lines: Array(Set(group.map(\.line))).sorted(), loss: out.nllSum / Double(max(1, out.tokens)))
            }
            nll += out.nllSum
            count += out.tokens
            done += group.reduce(0) { $0 + $1.ids.count }
            progress?(done, totalTokens)
            i += bs
        }
        return (nll, count)
    }
}
