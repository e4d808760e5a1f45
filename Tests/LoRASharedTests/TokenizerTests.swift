// TokenizerTests: encode/decode against the tokenizers 0.23.3 results in Fixtures/tokenizer/cases.json
// (scripts/gen_tokenizer_fixtures.py), component cases, special tokens and chat templates, and bad input.
import Foundation
import XCTest
@testable import LoRAShared
@testable import LoRAModel
@testable import LoRAEngine
@testable import LoRATrain
@testable import LoRATokenizer

enum TokenizerFixtures {
    static let dir = Fixtures.path("tokenizer")
    static let cases: JSONObject = {
        let data = try! Data(contentsOf: URL(fileURLWithPath: dir + "/cases.json"))
        return try! JSONParser().parse(data).objectValue!
    }()
    /// The real SmolLM2-135M-Instruct folder (scripts/fetch-demo-model), when fetched.
    static let smolDir = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("models/smollm2-135m-instruct").path

    static func tokenizer(_ kind: String) throws -> Tokenizer {
        if kind == "smollm2" {
            guard FileManager.default.fileExists(atPath: smolDir + "/tokenizer.json") else {
                throw XCTSkip("models/smollm2-135m-instruct not fetched (scripts/fetch-demo-model)")
            }
            return try Tokenizer.load(directory: smolDir)
        }
        return try Tokenizer.load(directory: dir + "/" + kind)
    }
}

/// Shows a string with its control and invisible characters escaped.
func visible(_ s: String, limit: Int = 160) -> String {
    var out = ""
    for v in s.unicodeScalars {
        switch v.value {
        case 0x0A: out += "\\n"
        case 0x0D: out += "\\r"
        case 0x09: out += "\\t"
        case 0..<0x20, 0x7F..<0xA0, 0x200B...0x200F, 0x2028, 0x2029, 0xFEFF: out += String(format: "\\u{%X}", v.value)
        default: out.unicodeScalars.append(v)
        }
    }
    return out.count > limit ? String(out.prefix(limit)) + "…(\(out.count) chars)" : out
}

/// Equal code points (Swift's == also accepts canonically equivalent strings, "é" == "e\u{301}").
func same(_ a: String, _ b: String) -> Bool { a.utf8.elementsEqual(b.utf8) }
func same(_ a: [String], _ b: [String]) -> Bool { a.count == b.count && zip(a, b).allSatisfy { same($0, $1) } }

final class TokenizerTests: XCTestCase {
    /// Compares every case of one tokenizer kind; prints the first mismatch with the tokens around it.
    func runCases(_ kind: String) throws {
        guard let spec = TokenizerFixtures.cases["tokenizers"]?[kind]?.objectValue else {
            throw XCTSkip("no cases for \(kind) in cases.json")
        }
        let tok = try TokenizerFixtures.tokenizer(kind)
        XCTAssertEqual(tok.vocabSize, Int(spec["vocab_size"]!.intValue!), "\(kind): vocab size")
        func ints(_ v: JSONValue?) -> [Int] { v!.arrayValue!.map { Int($0.intValue!) } }
        func tokens(_ ids: [Int], around i: Int) -> String {
            let lo = max(0, i - 3), hi = min(ids.count, i + 4)
            guard lo < hi else { return "[]" }
            return (lo..<hi).map { "\(ids[$0]):\(visible(tok.idToToken(ids[$0]) ?? "?"))" }.joined(separator: " ")
        }
        var failures: [String] = []
        var encodePassed = 0, decodePassed = 0
        let cases = spec["cases"]!.arrayValue!
        for c in cases {
            let text = c["text"]!.stringValue!
            var ok = true
            for (ids, add) in [(ints(c["ids"]), true), (ints(c["ids_no_special"]), false)] {
                let got = tok.encode(text, addSpecialTokens: add)
                if got != ids {
                    ok = false
                    let i = (0..<min(got.count, ids.count)).first { got[$0] != ids[$0] } ?? min(got.count, ids.count)
                    failures.append("""
                        \(kind) encode(\"\(visible(text))\", addSpecialTokens: \(add)) differs at token \(i) \
                        (\(got.count) vs \(ids.count) tokens)
                          expected: \(tokens(ids, around: i))
                          got:      \(tokens(got, around: i))
                          words:    \(tok.preTokenize(text).prefix(12).map { visible($0) })
                        """)
                }
            }
            let ids = ints(c["ids"])
            for (key, skip) in [("decoded", false), ("decoded_skip", true)] {
                let got = tok.decode(ids, skipSpecialTokens: skip)
                if !same(got, c[key]!.stringValue!) {
                    ok = false
                    failures.append("\(kind) decode(\(ids.prefix(20)), skip: \(skip)) = \"\(visible(got))\", expected \"\(visible(c[key]!.stringValue!))\"")
                }
            }
            if ok { encodePassed += 1 }
        }
        let decodeCases = spec["decode_cases"]!.arrayValue!
        for c in decodeCases {
            let ids = ints(c["ids"])
            var ok = true
            for (key, skip) in [("decoded", false), ("decoded_skip", true)] {
                let got = tok.decode(ids, skipSpecialTokens: skip)
                if !same(got, c[key]!.stringValue!) {
                    ok = false
                    failures.append("\(kind) decode(\(ids), skip: \(skip)) = \"\(visible(got))\", expected \"\(visible(c[key]!.stringValue!))\"")
                }
            }
            if ok { decodePassed += 1 }
        }
        print("tokenizer \(kind): \(encodePassed)/\(cases.count) encode cases, \(decodePassed)/\(decodeCases.count) decode cases")
        if !failures.isEmpty {
            XCTFail("\(failures.count) mismatches; first ones:\n" + failures.prefix(5).joined(separator: "\n"))
        }
    }

    func testLlama3Kind() throws { try runCases("llama3") }
    func testQwen2Kind() throws { try runCases("qwen2") }
    func testGPT2KindLegacyMerges() throws { try runCases("gpt2") }
    func testLlama2LegacyKind() throws { try runCases("llama2") }
    func testMistralMetaspaceKind() throws { try runCases("mistral") }
    func testMetaspaceSplitKind() throws { try runCases("metaspace-split") }
    func testMiscKind() throws { try runCases("misc") }
    func testSmolLM2() throws { try runCases("smollm2") }

    // MARK: components

    func testNormalizers() throws {
        for (k, group) in TokenizerFixtures.cases["normalizers"]!.arrayValue!.enumerated() {
            let n = try Normalizer.parse(try TokenizerJSON(group["config"]!, path: "cases.json", keyPath: "normalizers[\(k)]"))
            for c in group["cases"]!.arrayValue! {
                let text = c["text"]!.stringValue!
                var failure: TokenizerError?
                let got = String(decoding: n.apply(Array(text.utf8), &failure), as: UTF8.self)
                XCTAssertNil(failure)
                XCTAssertTrue(same(got, c["normalized"]!.stringValue!), "\(visible(got)) \(group["config"]!.serialized()) on \"\(visible(text))\"")
            }
        }
    }

    func testPreTokenizers() throws {
        for (k, group) in TokenizerFixtures.cases["pre_tokenizers"]!.arrayValue!.enumerated() {
            let p = try PreTokenizer.parse(try TokenizerJSON(group["config"]!, path: "cases.json", keyPath: "pre_tokenizers[\(k)]"))
            for c in group["cases"]!.arrayValue! {
                let text = c["text"]!.stringValue!
                var w = Words()
                w.bytes = Array(text.utf8)
                if !text.isEmpty { w.spans = [.init(start: 0, end: w.bytes.count, token: -1, first: true)] }
                var scratch = ScanScratch()
                p.apply(&w, &scratch)
                let expected = c["words"]!.arrayValue!.map { $0.stringValue! }
                let got = w.strings()
                XCTAssertTrue(same(got, expected), "\(got) != \(expected): \(group["config"]!.serialized()) on \"\(visible(text))\"")
            }
        }
    }

    func testDecoders() throws {
        for (k, group) in TokenizerFixtures.cases["decoders"]!.arrayValue!.enumerated() {
            let d = try Decoder.parse(try TokenizerJSON(group["config"]!, path: "cases.json", keyPath: "decoders[\(k)]"))
            for c in group["cases"]!.arrayValue! {
                let tokens = c["tokens"]!.arrayValue!.map { $0.stringValue! }
                var failure: TokenizerError?
                let got = d.decodeChain(tokens, &failure).joined()
                XCTAssertNil(failure)
                XCTAssertTrue(same(got, c["decoded"]!.stringValue!), "\(visible(got)) \(group["config"]!.serialized()) on \(tokens)")
            }
        }
    }
}

final class TokenizerBehaviourTests: XCTestCase {
    func testSpecialTokensTemplatesAndLookups() throws {
        let l3 = try TokenizerFixtures.tokenizer("llama3")
        XCTAssertEqual(l3.bosToken, "<|begin_of_text|>"); XCTAssertEqual(l3.bosTokenId, 2000)
        XCTAssertEqual(l3.eosToken, "<|eot_id|>"); XCTAssertEqual(l3.eosTokenId, 2004)
        XCTAssertNil(l3.padTokenId)
        XCTAssertTrue(l3.addBosToken); XCTAssertFalse(l3.addEosToken)
        XCTAssertTrue(l3.chatTemplate?.contains("<|start_header_id|>") == true)
        XCTAssertEqual(l3.encode("", addSpecialTokens: true), [2000])
        XCTAssertEqual(l3.encode("", addSpecialTokens: false), [])

        let q = try TokenizerFixtures.tokenizer("qwen2")
        XCTAssertNil(q.bosToken)  // "bos_token": null
        XCTAssertEqual(q.eosToken, "<|im_end|>"); XCTAssertEqual(q.eosTokenId, 1813)  // {"content": ...} form
        XCTAssertEqual(q.padToken, "<|endoftext|>"); XCTAssertEqual(q.padTokenId, 1811)
        XCTAssertFalse(q.addBosToken)
        XCTAssertTrue(q.chatTemplate?.hasPrefix("{% for m in messages %}<|im_start|>") == true)  // "default" of the list
        XCTAssertTrue(q.isSpecialToken(1812)); XCTAssertFalse(q.isSpecialToken(1814)); XCTAssertFalse(q.isSpecialToken(5))

        let g = try TokenizerFixtures.tokenizer("gpt2")
        XCTAssertEqual(g.bosTokenId, 0); XCTAssertEqual(g.eosTokenId, 0); XCTAssertEqual(g.unkTokenId, 0)
        XCTAssertEqual(g.chatTemplate, "{% for m in messages %}{{ m.content }}{{ eos_token }}{% endfor %}")  // chat_template.jinja

        let l2 = try TokenizerFixtures.tokenizer("llama2")
        XCTAssertEqual(l2.bosToken, "<s>"); XCTAssertEqual(l2.bosTokenId, 1)
        XCTAssertEqual(l2.eosTokenId, 2); XCTAssertEqual(l2.unkTokenId, 0); XCTAssertNil(l2.padToken)
        XCTAssertTrue(l2.addBosToken)
        XCTAssertEqual(l2.tokenToId("<0x0A>"), 3 + 0x0A); XCTAssertEqual(l2.idToToken(3 + 0xFF), "<0xFF>")

        // No tokenizer_config.json: BOS from nothing, UNK from the model.
        let ms = try TokenizerFixtures.tokenizer("metaspace-split")
        XCTAssertNil(ms.bosToken); XCTAssertNil(ms.chatTemplate); XCTAssertEqual(ms.unkToken, "<unk>"); XCTAssertEqual(ms.unkTokenId, 0)
        XCTAssertFalse(ms.addBosToken)

        let misc = try TokenizerFixtures.tokenizer("misc")  // RobertaProcessing: <s> A </s>
        XCTAssertTrue(misc.addBosToken); XCTAssertTrue(misc.addEosToken)
        XCTAssertEqual(misc.encode("", addSpecialTokens: true), [0, 2])

        for kind in ["llama3", "qwen2", "llama2", "misc"] {
            let t = try TokenizerFixtures.tokenizer(kind)
            for id in stride(from: 0, to: t.vocabSize, by: 7) {
                guard let s = t.idToToken(id) else { continue }
                XCTAssertEqual(t.tokenToId(s), id, "\(kind) token \(visible(s))")
            }
            XCTAssertNil(t.idToToken(-1)); XCTAssertNil(t.idToToken(10_000_000)); XCTAssertNil(t.tokenToId("no such token ☃☃"))
        }
    }

    func testSmolLM2Specials() throws {
        let t = try TokenizerFixtures.tokenizer("smollm2")
        XCTAssertEqual(t.vocabSize, 49152)
        XCTAssertEqual(t.bosToken, "<|im_start|>"); XCTAssertEqual(t.bosTokenId, 1)
        XCTAssertEqual(t.eosTokenId, 2); XCTAssertEqual(t.padTokenId, 2); XCTAssertEqual(t.unkTokenId, 0)
        XCTAssertFalse(t.addBosToken)  // the ByteLevel post-processor adds nothing
        XCTAssertTrue(t.chatTemplate?.contains("<|im_start|>") == true)
        XCTAssertEqual(t.encode("Hello world"), [19556, 905])
    }

    /// The heap merge (long words) and the rescanning merge (short words) give the same tokens.
    func testHeapAndScanMergesAgree() throws {
        let texts = TokenizerFixtures.cases["tokenizers"]!["llama2"]!["cases"]!.arrayValue!.map { $0["text"]!.stringValue! }
        let scan = try TokenizerFixtures.tokenizer("llama2"), heap = try TokenizerFixtures.tokenizer("llama2")
        scan.model.heapThreshold = .max
        heap.model.heapThreshold = 1
        var long = 0
        for text in texts + [String(repeating: "antidisestablishmentarianism ", count: 300)] {
            XCTAssertEqual(scan.encode(text), heap.encode(text), visible(text))
            if text.utf8.count > 64 { long += 1 }
        }
        XCTAssertGreaterThan(long, 20)
    }

    /// The hand-written GPT-2 / Llama 3 / Qwen2 scanners agree with the same regexes run by ICU.
    func testKnownRegexScannersMatchICU() throws {
        let pool = Array("aZé ß\t\n\r  '.,!?-_0123456789٣½²中😀👍🏽\u{200D}\u{301}\u{A0}\u{85}\u{0B}\u{2028}Ωж".unicodeScalars)
            + Array("'s'S're'RE'll've'd'm'tſ".unicodeScalars)
        var rng = Xoshiro256(seed: 7)
        for pattern in [SplitPattern.gpt2Regex, SplitPattern.llama3Regex, SplitPattern.qwen2Regex] {
            let fast = try SplitPattern(text: pattern, isRegex: true, path: "test", key: "pattern")
            let icu = SplitPattern(.icu(try SplitPattern.compileICU(pattern, path: "test", key: "pattern")))
            var scratch = ScanScratch()
            for _ in 0..<2000 {
                var s = String.UnicodeScalarView()
                for _ in 0..<Int(rng.next() % 24) { s.append(pool[Int(rng.next() % UInt64(pool.count))]) }
                let bytes = Array(String(s).utf8)
                var a: [Int] = [], b: [Int] = []
                bytes.withUnsafeBufferPointer { p in
                    guard let base = p.baseAddress else { return }
                    fast.matches(base, p.count, into: &a, scratch: &scratch)
                    icu.matches(base, p.count, into: &b, scratch: &scratch)
                }
                XCTAssertEqual(a, b, "\(pattern) on \"\(visible(String(s)))\"")
            }
        }
    }

    func testConcurrentEncodesAgree() throws {
        let t = try TokenizerFixtures.tokenizer("qwen2")
        let texts = TokenizerFixtures.cases["tokenizers"]!["qwen2"]!["cases"]!.arrayValue!.map { $0["text"]!.stringValue! }
        let serial = texts.map { t.encode($0) }
        final class Box: @unchecked Sendable { var out: [[[Int]]] = Array(repeating: [], count: 4) }
        let box = Box()
        let lock = NSLock()
        DispatchQueue.concurrentPerform(iterations: 4) { k in
            let r = texts.map { t.encode($0) }
            lock.lock(); box.out[k] = r; lock.unlock()
        }
        for r in box.out { XCTAssertEqual(r, serial) }
    }

    // MARK: bad input

    func writeTokenizer(_ json: String, config: String? = nil) -> String {
        let dir = makeTempDir("tok")
        writeData(Data(json.utf8), dir + "/tokenizer.json")
        if let config { writeData(Data(config.utf8), dir + "/tokenizer_config.json") }
        return dir
    }

    func tiny(model: String = #"{"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]}"#,
              preTokenizer: String = "null", decoder: String = "null", normalizer: String = "null") -> String {
        #"{"version": "1.0", "added_tokens": [], "normalizer": \#(normalizer), "pre_tokenizer": \#(preTokenizer), "#
            + #""post_processor": null, "decoder": \#(decoder), "model": \#(model)}"#
    }

    func testBadTokenizerFiles() throws {
        let missing = makeTempDir("tok")
        assertThrows(try Tokenizer.load(directory: missing), contains: missing + "/tokenizer.json: not found")
        let ok = try Tokenizer.load(directory: writeTokenizer(tiny()))
        XCTAssertEqual(ok.encode("abba"), [2, 1, 0])
        XCTAssertEqual(ok.decode([2, 1]), "ab b")  // no decoder: tokens joined by spaces, as tokenizers does

        let cases: [(String, String)] = [
            ("{\"model\": ", "tokenizer.json: invalid JSON"),
            ("[1, 2]", "top level is a array"),
            (#"{"version": "1.0"}"#, #"missing required key "model""#),
            (tiny(model: #"{"type": "BPE", "merges": []}"#), #"missing required key "model.vocab""#),
            (tiny(model: #"{"type": "BPE", "vocab": {"a": 0}}"#), #"missing required key "model.merges""#),
            (tiny(model: #"{"type": "BPE", "vocab": {"a": "x"}, "merges": []}"#), #""model.vocab": the id of 'a'"#),
            (tiny(model: #"{"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": ["a zz"]}"#),
             #""model.merges[0]" names 'zz', which is not in model.vocab"#),
            (tiny(model: #"{"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": [["a", "b"]]}"#),
             #""model.merges[0]" names 'ab'"#),
            (tiny(model: #"{"type": "BPE", "vocab": {"a": 0}, "merges": ["a"]}"#), #""model.merges[0]": expected "left right""#),
            (tiny(model: #"{"type": "Unigram", "vocab": [["a", 0.0]]}"#), "tokenizer model 'Unigram' is not supported (BPE only)"),
            (tiny(model: #"{"type": "WordPiece", "vocab": {"a": 0}}"#), "tokenizer model 'WordPiece' is not supported (BPE only)"),
            (tiny(model: #"{"type": "WordLevel", "vocab": {"a": 0}}"#), "tokenizer model 'WordLevel' is not supported (BPE only)"),
            (tiny(preTokenizer: #"{"type": "BertPreTokenizer"}"#),
             #""pre_tokenizer.type": type 'BertPreTokenizer' is not supported; supported: ByteLevel"#),
            (tiny(preTokenizer: #"{"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"Regex": "(a"}, "behavior": "Isolated", "invert": false}]}"#),
             #""pre_tokenizer.pretokenizers[0].pattern": regex (a does not compile"#),
            (tiny(preTokenizer: #"{"type": "Split", "pattern": {"Regex": "a"}, "behavior": "Sideways"}"#),
             #""pre_tokenizer.behavior": 'Sideways' is not one of"#),
            (tiny(decoder: ###"{"type": "WordPiece", "prefix": "##"}"###), #""decoder.type": type 'WordPiece' is not supported"#),
        ]
        for (json, message) in cases {
            let dir = writeTokenizer(json)
            assertThrows(try Tokenizer.load(directory: dir), contains: message)
            assertThrows(try Tokenizer.load(directory: dir), contains: dir + "/tokenizer.json")
        }
        assertThrows(try Tokenizer.load(directory: writeTokenizer(tiny(), config: "{\"bos_token\": ")),
                     contains: "tokenizer_config.json: invalid JSON")
        assertThrows(try Tokenizer.load(directory: writeTokenizer(tiny(), config: #"{"bos_token": 5}"#)),
                     contains: #"tokenizer_config.json: "bos_token": expected a string"#)
        assertThrows(try Tokenizer.load(directory: writeTokenizer(tiny(), config: #"{"chat_template": 5}"#)),
                     contains: #""chat_template": expected a string or a list"#)
    }

    /// A Split regex that backtracks exponentially (`(a+)+$` on "aaa…ab") stops at its time limit: encodeChecked
    /// fails naming the file and the pattern, encode leaves the piece unsplit; neither hangs.
    func testBacktrackingRegexStops() throws {
        let split = #"{"type": "Split", "pattern": {"Regex": "(a+)+$"}, "behavior": "Isolated", "invert": false}"#
        let dir = writeTokenizer(tiny(preTokenizer: split))
        let t = try Tokenizer.load(directory: dir)
        XCTAssertEqual(try t.encodeChecked("aab"), [0, 2])  // no match: one piece
        let evil = String(repeating: "a", count: 60) + "b"
        var t0 = Date()
        assertThrows(try t.encodeChecked(evil), contains: dir + #"/tokenizer.json: "pre_tokenizer.pattern": regex (a+)+$ exceeded its limit"#)
        XCTAssertLessThan(Date().timeIntervalSince(t0), 2 * SplitPattern.icuSeconds + 0.5)
        t0 = Date()
        XCTAssertEqual(t.encode(evil), [Int](repeating: 0, count: 59) + [2])  // left whole: BPE as one word
        XCTAssertLessThan(Date().timeIntervalSince(t0), 2 * SplitPattern.icuSeconds + 0.5)
        XCTAssertEqual(try t.encodeChecked("ab"), [2])  // the failure does not stick to the tokenizer
    }

    /// The Replace regexes of the normalizer and the decoder run under the same limits, and their failures are
    /// reported too: encodeChecked / decodeChecked name the file and key, encode / decode leave the text unreplaced.
    func testBacktrackingReplaceRegexesAreReported() throws {
        let replace = #"{"type": "Replace", "pattern": {"Regex": "(a+)+$"}, "content": "b"}"#
        let evil = String(repeating: "a", count: 60) + "b"
        let n = try Tokenizer.load(directory: writeTokenizer(tiny(normalizer: replace)))
        XCTAssertEqual(try n.encodeChecked("ba"), [1, 1])  // a match: replaced
        var t0 = Date()
        assertThrows(try n.encodeChecked(evil), contains: #"tokenizer.json: "normalizer.pattern": regex (a+)+$ exceeded its limit"#)
        XCTAssertLessThan(Date().timeIntervalSince(t0), 2 * SplitPattern.icuSeconds + 0.5)
        XCTAssertEqual(n.encode(evil), [Int](repeating: 0, count: 59) + [2])  // unreplaced
        XCTAssertEqual(try n.encodeChecked("ab"), [2])

        let fuseReplace = #"{"type": "Sequence", "decoders": [{"type": "Fuse"}, \#(replace)]}"#
        let d = try Tokenizer.load(directory: writeTokenizer(tiny(decoder: fuseReplace)))
        XCTAssertEqual(try d.decodeChecked([1, 0]), "bb")
        let ids = [Int](repeating: 0, count: 60) + [1]
        t0 = Date()
        assertThrows(try d.decodeChecked(ids), contains: #"tokenizer.json: "decoder.decoders[1].pattern": regex (a+)+$ exceeded its limit"#)
        XCTAssertLessThan(Date().timeIntervalSince(t0), 2 * SplitPattern.icuSeconds + 0.5)
        XCTAssertEqual(d.decode(ids), evil)
        var stream = TextStream(tokenizer: d)
        XCTAssertThrowsError(try { for id in ids { _ = try stream.push(id) } }())
    }

    /// A tokenizer.json cut anywhere is an error naming the file, never a crash.
    func testTruncatedFilesFailCleanly() throws {
        let full = try Data(contentsOf: URL(fileURLWithPath: TokenizerFixtures.dir + "/qwen2/tokenizer.json"))
        for cut in stride(from: 0, to: full.count, by: max(1, full.count / 97)) {
            assertThrows(try Tokenizer(tokenizerJSON: full.prefix(cut), path: "cut.json"), contains: "cut.json")
        }
    }
}
