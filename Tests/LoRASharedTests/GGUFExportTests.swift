// GGUFExportTests: the GGUF writer and reader round trip, Q8_0 bit-exact against gguf-py's quantizer (fixture from
// scripts/gen_gguf_fixtures.py), and hostile files answered with errors, never a crash.
import Foundation
import XCTest
@testable import LoRAShared
@testable import LoRAConvert

final class GGUFExportTests: XCTestCase {
    /// The fixture's metadata as gguf-py wrote it, in its order (general.architecture first).
    static let fixtureMetadata: [(String, GGUFValue)] = [
        ("general.architecture", .string("llama")), ("test.u32", .u32(7)), ("test.i64", .i64(-5)),
        ("test.f32", .f32(0.5)), ("test.bool", .bool(true)), ("test.string", .string("héllo")),
        ("test.strings", .array([.string("a"), .string("bc"), .string("")])),
        ("test.ints", .array([.i32(1), .i32(2), .i32(3)])),
    ]

    func writeGGUF(_ md: [(String, GGUFValue)], _ ts: [GGUFTensor]) throws -> (path: String, bytes: Int) {
        let path = makeTempDir("gguf") + "/m.gguf"
        let f = try AtomicFile(path: path)
        let n = try GGUFWriter.write(metadata: md, tensors: ts, to: f)
        try f.commit()
        return (path, n)
    }

    func testQ8_0MatchesGGUFPyAndFileIsByteIdentical() throws {
        let fx = try GGUFFile(path: Fixtures.path("gguf/q8_0.gguf"))
        XCTAssertEqual(fx.version, 3)
        XCTAssertEqual(fx.metadata.map(\.key), Self.fixtureMetadata.map(\.0))
        for ((k, v), got) in zip(Self.fixtureMetadata, fx.metadata) { XCTAssertEqual(got.value, v, k) }
        let x = try XCTUnwrap(fx.tensor("x")), q = try XCTUnwrap(fx.tensor("x.q8_0"))
        XCTAssertEqual(x.shape, [4, 64]); XCTAssertEqual(x.type, .f32)
        XCTAssertEqual(q.shape, [4, 64]); XCTAssertEqual(q.type, .q8_0); XCTAssertEqual(q.byteCount, 8 * 34)
        let xs = fx.floats(x)
        XCTAssertEqual(GGUFCodec.encode(xs, as: .q8_0), Array(fx.bytes(q)), "Q8_0 bytes differ from gguf-py's")
        // Dequantized within d/2 of the input, block by block, plus what storing d in fp16 moves (127·|d16 − d|).
        let dq = fx.floats(q)
        for b in 0..<(xs.count / 32) {
            let d = xs[(b * 32)..<(b * 32 + 32)].map(abs).max()! / 127, d16 = f16ToFloat(floatToF16(d))
            for j in (b * 32)..<(b * 32 + 32) { XCTAssertLessThanOrEqual(abs(dq[j] - xs[j]), d16 / 2 + 127 * abs(d16 - d) + 1e-6) }
        }
        // Our writer, given the same content, writes the same file byte for byte.
        let ours = try writeGGUF(Self.fixtureMetadata, [GGUFTensor(name: "x", shape: [4, 64], type: .f32, floats: xs),
                                                        GGUFTensor(name: "x.q8_0", shape: [4, 64], type: .q8_0, floats: xs)])
        let a = try Data(contentsOf: URL(fileURLWithPath: ours.path)), b = try Data(contentsOf: URL(fileURLWithPath: Fixtures.path("gguf/q8_0.gguf")))
        XCTAssertEqual(a.count, ours.bytes)
        XCTAssertEqual(a, b, "our GGUF differs from gguf-py's for the same content")
    }

    func testRoundTripTypes() throws {
        let xs = (0..<(3 * 96)).map { Float(sin(Double($0) * 0.37)) * 3 }
        let md: [(String, GGUFValue)] = [("general.architecture", .string("qwen2")), ("qwen2.block_count", .u32(2)),
                                         ("f64", .f64(1e-6)), ("u64", .u64(1 << 40)), ("empty", .array([]))]
        let ts = GGMLType.allCases.map { GGUFTensor(name: "t.\($0.name)", shape: [3, 96], type: $0, floats: xs) }
            + [GGUFTensor(name: "v", shape: [5], type: .f32, floats: [1, 2, 3, 4, 5])]
        let f = try GGUFFile(path: try writeGGUF(md, ts).path)
        XCTAssertEqual(f["qwen2.block_count"]?.int, 2)
        XCTAssertEqual(f["f64"]?.float, 1e-6)
        XCTAssertEqual(f["u64"], .u64(1 << 40))
        XCTAssertEqual(f["empty"], .array([]))
        XCTAssertEqual(f.tensors.map(\.name), ts.map(\.name))
        for t in f.tensors { XCTAssertEqual(t.offset % 32, 0, t.name) }
        XCTAssertEqual(f.floats(f.tensor("t.F32")!), xs)
        XCTAssertEqual(f.floats(f.tensor("t.F16")!), xs.map { f16ToFloat(floatToF16($0)) })
        XCTAssertEqual(f.floats(f.tensor("t.BF16")!), xs.map { bf16ToFloat(floatToBF16($0)) })
        XCTAssertEqual(f.floats(f.tensor("v")!), [1, 2, 3, 4, 5])
        XCTAssertEqual(f.tensor("v")!.shape, [5])
    }

    /// Hostile files: every prefix of a valid file, huge counts, bad string lengths and types are errors.
    func testHostileFilesAreErrors() throws {
        let path = try writeGGUF(Self.fixtureMetadata, [GGUFTensor(name: "x", shape: [2, 32], type: .q8_0, floats: [Float](repeating: 1, count: 64))]).path
        let good = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        let parsed = try GGUFFile(file: MappedFile(bytes: good, name: "good.gguf"))
        let dataEnd = parsed.tensors[0].offset + parsed.tensors[0].byteCount  // past it only padding follows
        func expectError(_ bytes: [UInt8], _ what: String, contains: String? = nil) {
            XCTAssertThrowsError(try GGUFFile(file: MappedFile(bytes: bytes, name: "bad.gguf")), what) { e in
                let s = "\(e)"
                XCTAssertTrue(s.hasPrefix("bad.gguf: "), s)
                if let c = contains { XCTAssertTrue(s.contains(c), "\(what): \(s)") }
            }
        }
        for n in stride(from: 0, to: dataEnd, by: 7) { expectError(Array(good[0..<n]), "prefix \(n)") }
        expectError(Array("GGUX".utf8) + good[4...], "magic", contains: "not a GGUF")
        func patched(_ at: Int, _ v: UInt64) -> [UInt8] {
            var b = good
            withUnsafeBytes(of: v.littleEndian) { for i in 0..<8 { b[at + i] = $0[i] } }
            return b
        }
        expectError(patched(8, UInt64.max), "tensor count", contains: "tensors")
        expectError(patched(16, 1 << 40), "kv count", contains: "metadata entries")
        expectError(patched(24, UInt64.max), "key length", contains: "invalid string")
        expectError(patched(24, 1 << 20), "key length past the end", contains: "truncated")
        var badType = good
        badType[24 + 8 + 20] = 99   // the type of general.architecture
        expectError(badType, "value type", contains: "unknown value type 99")
        // Array length past the file: find test.ints' count (after its element type).
        let key = Array("test.ints".utf8)
        let k = try XCTUnwrap((0..<(good.count - key.count)).first { Array(good[$0..<($0 + key.count)]) == key })
        expectError(patched(k + key.count + 8, 1 << 50), "array length", contains: "elements in 'test.ints'")
    }
}

@testable import LoRAInspect

final class GGUFInspectTests: XCTestCase {
    func testInspectRecognizesGGUF() throws {
        let j = try Inspector.inspect(Fixtures.path("gguf/q8_0.gguf"))
        XCTAssertEqual(j["kind"]?.stringValue, "gguf")
        XCTAssertEqual(j["architecture"]?.stringValue, "llama")
        XCTAssertEqual(j["version"]?.intValue, 3)
        XCTAssertEqual(j["metadata"]?["test.u32"]?.intValue, 7)
        XCTAssertEqual(j["tensors"]?.arrayValue?.count, 2)
        XCTAssertEqual(j["tensor_types"]?["Q8_0"]?.intValue, 1)
    }
}
