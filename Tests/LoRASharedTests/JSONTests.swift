// JSONTests: the strict parser (errors, duplicates, depth) and Python-compatible serialization.
import XCTest
@testable import LoRAShared
@testable import LoRAModel
@testable import LoRAEngine
@testable import LoRATrain
@testable import LoRATokenizer

final class JSONTests: XCTestCase {
    func testParsesAndKeepsKeyOrder() throws {
        let v = try JSONParser().parse(#"{"b": 1, "a": [true, null, -2.5e3, "x\u00e9\ud83d\ude00"], "c": {}}"#)
        XCTAssertEqual(v.objectValue?.keys, ["b", "a", "c"])
        XCTAssertEqual(v["a"]?.arrayValue?[2], .double(-2500))
        XCTAssertEqual(v["a"]?.arrayValue?[3], .string("xé😀"))
    }

    func testRejectsMalformedInput() {
        for bad in ["", "{", "[1,]", "{\"a\" 1}", "tru", "\"\u{01}\"", "01", "1.", "{} x", "\"\\q\""] {
            XCTAssertThrowsError(try JSONParser().parse(bad), "should reject \(bad.debugDescription)")
        }
        let deep = String(repeating: "[", count: 10_000) + String(repeating: "]", count: 10_000)
        XCTAssertThrowsError(try JSONParser().parse(deep))
        XCTAssertThrowsError(try JSONParser(rejectDuplicateKeys: true).parse(#"{"a":1,"a":2}"#))
        XCTAssertEqual(try JSONParser().parse(#"{"a":1,"a":2}"#)["a"], .int(2))
    }

    func testPythonLayouts() {
        let v = JSONValue.object(JSONObject([("b", .int(1)), ("a", .array([.double(0.5), .null]))]))
        XCTAssertEqual(v.serialized(.compact), #"{"b":1,"a":[0.5,null]}"#)
        XCTAssertEqual(v.serialized(.python), #"{"b": 1, "a": [0.5, null]}"#)
        XCTAssertEqual(v.serialized(.indented(2), sortKeys: true), "{\n  \"a\": [\n    0.5,\n    null\n  ],\n  \"b\": 1\n}")
    }

    func testPythonFloatRepr() {
        let cases: [(Double, String)] = [
            (1e-05, "1e-05"), (0.0001, "0.0001"), (1e16, "1e+16"), (1e15, "1000000000000000.0"), (6.0, "6.0"),
            (0.1, "0.1"), (2.627983808517456, "2.627983808517456"), (-1.5e-7, "-1.5e-07"), (123.456, "123.456"),
            (Double(Float(0.0318)), "0.03180000185966492"), (1.7976931348623157e308, "1.7976931348623157e+308"),
        ]
        for (d, s) in cases { XCTAssertEqual(JSONValue.pythonFloatRepr(d), s) }
    }
}

final class JSONExactKeyTests: XCTestCase {
    /// "é" and "e\u0301" are different keys to JSON (tokenizer vocabularies hold both); Swift's String == would merge them.
    func testCanonicallyEquivalentKeysStayApart() throws {
        let v = try JSONParser(rejectDuplicateKeys: true).parse("{\"\u{E9}\": 1, \"e\u{301}\": 2}")
        XCTAssertEqual(v.objectValue?.count, 2)
        XCTAssertEqual(v["\u{E9}"], .int(1))
        XCTAssertEqual(v["e\u{301}"], .int(2))
    }
}
