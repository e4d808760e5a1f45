// TokenizerBench: encode throughput of the SmolLM2 tokenizer (opt-in with LORA_BENCH=1, in release), printing MB/s
// and an id checksum to compare with scripts/tokenizer_bench.py, which times the `tokenizers` reference the same way.
import Foundation
import XCTest
@testable import LoRAShared
@testable import LoRAModel
@testable import LoRAEngine
@testable import LoRATrain
@testable import LoRATokenizer

/// Encode throughput on the SmolLM2 tokenizer; opt-in, in release:
///   LORA_BENCH=1 LORA_BENCH_TEXT=/tmp/lora-tokenizer-bench.txt \
///     swift test -c release -Xswiftc -enable-testing --filter TokenizerBench
/// (-enable-testing because the test target uses @testable imports; LORA_BENCH_KIND=llama3 etc. picks a fixture
/// tokenizer instead; without LORA_BENCH_TEXT the text is synthetic.)
/// scripts/tokenizer_bench.py writes that text and times the `tokenizers` reference on it the same way.
final class TokenizerBench: XCTestCase {
    /// ~5 MB of pseudo-words drawn with Zipf-like frequencies, numbers and punctuation (when no text file is given).
    static func syntheticText(bytes: Int = 5_000_000) -> String {
        var rng = Xoshiro256(seed: 42)
        let syllables = ["ka", "lo", "mi", "ter", "an", "the", "ing", "pro", "ver", "sta", "qu", "ble", "tion", "re", "de"]
        let words: [String] = (0..<30_000).map { _ in (0..<(1 + Int(rng.next() % 4))).map { _ in syllables[Int(rng.next() % 15)] }.joined() }
        var out = "", lineLen = 0
        out.reserveCapacity(bytes + 100)
        while out.utf8.count < bytes {
            let u = Double(rng.next() >> 11) / Double(1 << 53)
            let w = words[min(words.count - 1, Int(pow(Double(words.count), u)) - 1)]
            switch rng.next() % 20 {
            case 0: out += " \(rng.next() % 100_000)"
            case 1: out += ", " + w
            case 2: out += ". " + w.capitalized
            default: out += " " + w
            }
            lineLen += w.count
            if lineLen > 70 { out += "\n"; lineLen = 0 }
        }
        return out
    }

    /// Consecutive whole lines of at least 4096 bytes, as scripts/tokenizer_bench.py cuts them.
    static func documents(_ text: String) -> [String] {
        var docs: [String] = [], cur = "", n = 0
        // split on U+000A alone (a Character split would keep "\r\n" whole)
        for line in text.unicodeScalars.split(separator: "\n", omittingEmptySubsequences: false) {
            cur.unicodeScalars += line
            cur += "\n"
            n += String(line).utf8.count + 1
            if n >= 4096 { docs.append(cur); cur = ""; n = 0 }
        }
        if !cur.isEmpty { docs.append(cur) }
        docs[docs.count - 1].removeLast()
        return docs
    }

    func testEncodeThroughput() throws {
        try XCTSkipUnless(ProcessInfo.processInfo.environment["LORA_BENCH"] != nil, "set LORA_BENCH=1 to run")
        let t0 = Date()
        let kind = ProcessInfo.processInfo.environment["LORA_BENCH_KIND"] ?? "smollm2"  // or a fixture kind
        let tok = try TokenizerFixtures.tokenizer(kind)
        print(String(format: "load %@: %.3f s", kind, Date().timeIntervalSince(t0)))
        let text: String
        if let path = ProcessInfo.processInfo.environment["LORA_BENCH_TEXT"] {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } else {
            text = TokenizerBench.syntheticText()
        }
        let mb = Double(text.utf8.count) / 1e6
        let docs = TokenizerBench.documents(text)
        for pass in ["fresh cache", "warm cache"] {
            let t1 = Date()
            var ids: [[Int]] = []
            ids.reserveCapacity(docs.count)
            for d in docs { ids.append(tok.encode(d, addSpecialTokens: false)) }
            let dt = Date().timeIntervalSince(t1)
            var h: UInt64 = 0xCBF2_9CE4_8422_2325  // FNV-1a over every id, as scripts/tokenizer_bench.py prints it
            for list in ids { for i in list { h = (h ^ UInt64(i)) &* 0x100_0000_01B3 } }
            print(String(format: "ours encode loop, %@: %.2f MB, %d docs, %d tokens, %.3f s, %.2f MB/s, ids checksum %016llx",
                         pass, mb, docs.count, ids.reduce(0) { $0 + $1.count }, dt, mb / dt, h))
        }
        let t2 = Date()
        let n = tok.encode(text, addSpecialTokens: false).count
        print(String(format: "ours one encode of the whole text: %d tokens, %.2f MB/s", n, mb / Date().timeIntervalSince(t2)))
    }
}
