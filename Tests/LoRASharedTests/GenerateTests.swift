// GenerateTests: the key/value-cache decoder equals the full forward pass (full, 4-bit, with an adapter), greedy
// lora-generate picks the full forward's argmax at every step, the samplers keep to top-k / top-p and follow the
// softmax, seeds reproduce, and bad input (prompt past the context, bad JSONL lines) gets one error line.
import Foundation
import XCTest
@testable import LoRAShared
@testable import LoRAModel
@testable import LoRAEngine
@testable import LoRATrain
@testable import LoRATokenizer

final class GenerateTests: XCTestCase {
    var dir = ""
    override func setUp() { dir = makeTempDir("gen") }
    override func tearDown() { try? FileManager.default.removeItem(atPath: dir) }

    /// Prefill with part of the sequence, then one token at a time: every step's logits equal the full forward's row.
    func checkCache(_ model: String, adapter: Adapter? = nil, file: StaticString = #filePath, line: UInt = #line) throws {
        let m = try ModelDir(path: model)
        let tr = try Transformer(model: m)
        if let a = adapter { try tr.attach(a, linears: try m.linearModules()) }
        let ids: [Int32] = [5, 17, 300, 42, 1000, 7, 99, 1500, 3, 64, 128, 900, 11, 12, 13, 14, 1800, 2]
        let full = try tr.forward(TokenBatch(tokens: ids, labels: ids, lengths: [ids.count], batch: 1, seq: ids.count), wantLogits: true).logits!
        let V = m.config.vocabSize
        let scale = full.map { abs($0) }.max()!
        let cache = KVCache(config: m.config, capacity: ids.count)
        let prefill = 7
        var got = try tr.decode(Array(ids[..<prefill]), cache: cache)
        var worst = maxAbsDiff(got, Array(full[(prefill - 1) * V..<prefill * V]))
        for t in prefill..<ids.count {
            got = try tr.decode([ids[t]], cache: cache)
            worst = max(worst, maxAbsDiff(got, Array(full[t * V..<(t + 1) * V])))
        }
        XCTAssertLessThan(worst / scale, 2e-6, "cache decoding differs from the full forward", file: file, line: line)
        XCTAssertEqual(cache.count, ids.count, file: file, line: line)
        XCTAssertThrowsError(try tr.decode([1], cache: cache), file: file, line: line)  // full
    }

    func testCacheDecodingEqualsFullForward() throws {
        try TinyModel.write(to: dir + "/base")
        try checkCache(dir + "/base")
        XCTAssertEqual(try runTool("lora-quantize", [dir + "/base", "-o", dir + "/nf4", "-q"]).status, 0)
        try checkCache(dir + "/nf4")
        let m = try ModelDir(path: dir + "/base")
        let a = try Adapter.initialize(config: LoRAConfig(r: 4, alpha: 8, dropout: 0, targets: .allLinear), model: m, initMode: .kaiming, seed: 2)
        var rng = Xoshiro256(seed: 3)
        for n in a.moduleNames { a.modules[n]!.b = a.modules[n]!.b.map { _ in rng.normal() * 0.1 } }
        try checkCache(dir + "/base", adapter: a)
    }

    func testGreedyFollowsTheFullForwardArgmax() throws {
        try TinyModel.write(to: dir + "/base")
        let r = try runTool("lora-generate", [dir + "/base", "--no-chat", "--jsonl", "-", "--max-tokens", "12", "--ids"],
                            stdin: Data("{\"prompt\": \"The quick brown fox\", \"id\": \"a\"}\n\n{\"prompt\": \"Hello\"}\n".utf8))
        XCTAssertEqual(r.status, 0, r.stderr)
        let lines = r.stdout.split(separator: "\n").map(String.init)
        XCTAssertEqual(lines.count, 2, r.stdout)
        let first = try jsonObject(lines[0])
        XCTAssertEqual(first["id"], .string("a"))
        XCTAssertEqual(first["line"], .int(1))
        XCTAssertEqual(try jsonObject(lines[1])["line"], .int(3))
        let tok = try Tokenizer.load(directory: dir + "/base")
        let m = try ModelDir(path: dir + "/base")
        let tr = try Transformer(model: m)
        for (l, text) in zip(lines, ["The quick brown fox", "Hello"]) {
            let o = try jsonObject(l)
            let gen = o["ids"]!.arrayValue!.map { Int32($0.intValue!) }
            let prompt = tok.encode(text, addSpecialTokens: true).map { Int32($0) }
            XCTAssertEqual(o["prompt_tokens"], .int(Int64(prompt.count)))
            XCTAssertEqual(gen.count, Int(o["tokens"]!.intValue!))
            let all = prompt + gen
            let logits = try tr.forward(TokenBatch(tokens: all, labels: all, lengths: [all.count], batch: 1, seq: all.count), wantLogits: true).logits!
            let V = m.config.vocabSize
            for (k, g) in gen.enumerated() {
                let row = Array(logits[(prompt.count - 1 + k) * V..<(prompt.count + k) * V])
                XCTAssertGreaterThanOrEqual(row[Int(g)], row.max()! - 1e-5, "step \(k) is not the argmax")
            }
            XCTAssertEqual(o["completion"]?.stringValue, tok.decode(gen.map { Int($0) }, skipSpecialTokens: true))
        }
        // Plain mode streams the same text.
        let p = try runTool("lora-generate", [dir + "/base", "--no-chat", "--prompt", "Hello", "--max-tokens", "12", "-q"])
        XCTAssertEqual(p.status, 0, p.stderr)
        XCTAssertEqual(p.stdout, try jsonObject(lines[1])["completion"]!.stringValue! + "\n")
        XCTAssertEqual(p.stderr, "")
    }

    func testChatPromptAndSeeds() throws {
        try TinyModel.write(to: dir + "/base")
        func gen(_ extra: [String]) throws -> String {
            let r = try runTool("lora-generate", [dir + "/base", "--prompt", "Hi there", "--max-tokens", "16", "-q"] + extra)
            XCTAssertEqual(r.status, 0, r.stderr)
            return r.stdout
        }
        let s1 = try gen(["--temperature", "1.0", "--seed", "1"])
        XCTAssertEqual(s1, try gen(["--temperature", "1.0", "--seed", "1"]))
        let others = try (2...4).map { try gen(["--temperature", "1.0", "--seed", "\($0)"]) }
        XCTAssertTrue(others.contains { $0 != s1 }, "different seeds should give different samples")
        // top-k 1 is greedy, whatever the temperature.
        XCTAssertEqual(try gen(["--temperature", "1.5", "--top-k", "1", "--seed", "9"]), try gen([]))
        // A system message changes the rendered prompt.
        let j = try runTool("lora-generate", [dir + "/base", "--jsonl", "-", "--max-tokens", "4", "-q"],
                            stdin: Data("{\"prompt\": \"Hi there\"}\n{\"prompt\": \"Hi there\", \"system\": \"Be brief.\"}\n".utf8))
        XCTAssertEqual(j.status, 0, j.stderr)
        let pt = j.stdout.split(separator: "\n").map { try! jsonObject(String($0))["prompt_tokens"]!.intValue! }
        XCTAssertNotEqual(pt[0], pt[1])
    }

    func testSamplerFiltersAndDistribution() {
        let logits: [Float] = [2.0, 1.0, 0.5, 0.0, -1.0]
        XCTAssertEqual(Sampler.argmax(logits), 0)
        XCTAssertEqual(Sampler.argmax([1, 3, 3, 2]), 1)  // first of equal maxima, as torch.argmax
        var s = Sampler(options: SamplingOptions(temperature: 1, topK: 2), seed: 1)
        var seen = Set<Int>()
        for _ in 0..<2000 { seen.insert(s.next(logits)) }
        XCTAssertEqual(seen, [0, 1])
        // top-p 0.6: p(0) = 0.574 < 0.6, so tokens 0 and 1 stay (cumulative 0.785).
        s = Sampler(options: SamplingOptions(temperature: 1, topP: 0.6), seed: 2)
        seen = []
        for _ in 0..<2000 { seen.insert(s.next(logits)) }
        XCTAssertEqual(seen, [0, 1])
        s = Sampler(options: SamplingOptions(temperature: 1, topP: 0.5), seed: 2)
        for _ in 0..<200 { XCTAssertEqual(s.next(logits), 0) }
        // Frequencies follow softmax(logits / T).
        for t in [0.5, 1.0, 2.0] {
            s = Sampler(options: SamplingOptions(temperature: t), seed: 7)
            var counts = [Int](repeating: 0, count: logits.count)
            let n = 40_000
            for _ in 0..<n { counts[s.next(logits)] += 1 }
            let e = logits.map { exp(Double($0) / t) }
            let z = e.reduce(0, +)
            for i in logits.indices {
                let p = e[i] / z
                let sd = (p * (1 - p) / Double(n)).squareRoot()
                XCTAssertEqual(Double(counts[i]) / Double(n), p, accuracy: 5 * sd + 1e-4, "T \(t) token \(i)")
            }
        }
    }

    /// The sampler keeps exactly the tokens a full sort of the vocabulary would (top-k with ties at the k-th
    /// value, top-p's smallest prefix, both combined), while sorting only the candidates above its threshold.
    func testSamplerCandidatesEqualFullSort() {
        var rng = Xoshiro256(seed: 11)
        func reference(_ logits: [Float], _ o: SamplingOptions) -> Set<Int> {
            let t = Float(o.temperature)
            var idx = Array(0..<logits.count)
            idx.sort { logits[$0] > logits[$1] || (logits[$0] == logits[$1] && $0 < $1) }
            if o.topK > 0 && o.topK < idx.count {
                let kth = logits[idx[o.topK - 1]]
                var keep = o.topK
                while keep < idx.count && logits[idx[keep]] >= kth { keep += 1 }
                idx.removeSubrange(keep...)
            }
            if o.topP < 1 {
                let m = logits[idx[0]] / t
                let p = idx.map { Double(exp(logits[$0] / t - m)) }
                let total = p.reduce(0, +)
                var cum = 0.0, keep = 0
                while keep < p.count { cum += p[keep] / total; keep += 1; if cum >= o.topP { break } }
                idx.removeSubrange(keep...)
            }
            return Set(idx)
        }
        for trial in 0..<24 {
            let n = 500 + trial * 37
            // Coarse values so that ties occur; a spread so that top-p needs many tokens on some trials.
            let spread = Float(1 + trial % 4) * 2 * (trial % 3 == 0 ? 10 : 1)
            let logits = (0..<n).map { _ in (Float(rng.next() % 64) / 64 - 0.5) * spread }
            for o in [SamplingOptions(temperature: 0.7, topK: 5), SamplingOptions(temperature: 1, topK: 40),
                      SamplingOptions(temperature: 1.3, topP: 0.9), SamplingOptions(temperature: 0.5, topP: 0.3),
                      SamplingOptions(temperature: 3, topP: 0.999), SamplingOptions(temperature: 1, topP: 0.99),
                      SamplingOptions(temperature: 1, topK: 50, topP: 0.8), SamplingOptions(temperature: 2, topK: n + 5)] {
                var s = Sampler(options: o, seed: UInt64(trial))
                _ = s.next(logits)
                XCTAssertEqual(Set(s.cand.map(Int.init)), reference(logits, o), "trial \(trial) \(o)")
                let kept = s.cand
                var sorted = kept
                sorted.sort { logits[Int($0)] > logits[Int($1)] || (logits[Int($0)] == logits[Int($1)] && $0 < $1) }
                XCTAssertEqual(kept, sorted, "candidates in sorted order, trial \(trial)")
            }
        }
        var ids: [Int32] = Array(0..<300).shuffled().map(Int32.init)
        let ls = (0..<300).map { Float($0 % 17) }
        Sampler.sortDescending(&ids, ls)
        XCTAssertEqual(ids, Array(0..<300).map(Int32.init).sorted { ls[Int($0)] > ls[Int($1)] || (ls[Int($0)] == ls[Int($1)] && $0 < $1) })
    }

    func testBadInput() throws {
        try TinyModel.write(to: dir + "/base", maxPositions: 32)
        // A prompt longer than the context.
        let long = String(repeating: "word ", count: 60)
        assertToolError(try runTool("lora-generate", [dir + "/base", "--no-chat", "--prompt", long]), contains: "context")
        // In JSONL mode the error names the line.
        assertToolError(try runTool("lora-generate", [dir + "/base", "--no-chat", "--jsonl", "-", "--max-tokens", "2"],
                                    stdin: Data("{\"prompt\": \"hi\"}\n{\"prompt\": \"\(long)\"}\n".utf8)), contains: "<stdin>:2")
        assertToolError(try runTool("lora-generate", [dir + "/base", "--jsonl", "-"], stdin: Data("{\"prompt\": \"hi\"\n".utf8)),
                        contains: "<stdin>:1")
        assertToolError(try runTool("lora-generate", [dir + "/base", "--jsonl", "-"], stdin: Data("{\"text\": 3}\n".utf8)),
                        contains: "\"prompt\"")
        // A prompt that nearly fills the context generates what fits and says so.
        let fit = try runTool("lora-generate", [dir + "/base", "--no-chat", "--jsonl", "-", "--max-tokens", "100"],
                              stdin: Data("{\"prompt\": \"\(String(repeating: "word ", count: 14))\"}\n".utf8))
        XCTAssertEqual(fit.status, 0, fit.stderr)
        let o = try jsonObject(fit.stdout)
        XCTAssertEqual(Int(o["tokens"]!.intValue! + o["prompt_tokens"]!.intValue!) <= 32, true)
        XCTAssertTrue(fit.stderr.contains("leaves room for only"), fit.stderr)
        // An empty prompt, on the command line, from a file or stdin, or in a JSONL row.
        assertToolError(try runTool("lora-generate", [dir + "/base", "--prompt", " "]), contains: "the prompt is empty", code: 64)
        assertToolError(try runTool("lora-generate", [dir + "/base"], stdin: Data("\n".utf8)), contains: "stdin holds no text", code: 64)
        assertToolError(try runTool("lora-generate", [dir + "/base", "--jsonl", "-", "--max-tokens", "2"],
                                    stdin: Data("{\"prompt\": \"hi\"}\n{\"prompt\": \"\"}\n".utf8)), contains: "<stdin>:2: the prompt is empty")
        // Flags that make no sense, and no chat template for a chat request.
        assertToolError(try runTool("lora-generate", [dir + "/base", "--prompt", "x", "--top-p", "0"]), contains: "--top-p", code: 64)
        assertToolError(try runTool("lora-generate", [dir + "/base", "--prompt", "x", "--temperature", "-1"]), contains: "--temperature", code: 64)
        try TinyModel.write(to: dir + "/plain", chatTemplate: false)
        assertToolError(try runTool("lora-generate", [dir + "/plain", "--prompt", "x", "--chat"]), contains: "--no-chat", code: 64)
    }
}
