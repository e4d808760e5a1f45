// TokenizerTests: encode/decode against the tokenizers 0.23.3 results in Fixtures/tokenizer/cases.json
// (scripts/gen_tokenizer_fixtures.py), component cases, special tokens and chat templates, and bad input.
import Foundation
import XCTest
@testable import LoRAShared

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
                let got = String(decoding: n.apply(Array(text.utf8)), as: UTF8.self)
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
                let got = d.decodeChain(tokens).joined()
                XCTAssertTrue(same(got, c["decoded"]!.stringValue!), "\(visible(got)) \(group["config"]!.serialized()) on \(tokens)")
            }
        }
    }
}
