// SafetensorsTests: round trips, files written by the Python library, and every malformed layout
// (truncation, header past the end, holes, overlaps, wrong sizes, bad JSON, duplicates) answered by an error.
import XCTest
@testable import LoRAShared
@testable import LoRAModel
@testable import LoRAEngine
@testable import LoRATrain
@testable import LoRATokenizer

final class SafetensorsTests: XCTestCase {
    var dir = ""
    override func setUp() { dir = makeTempDir("st") }
    override func tearDown() { try? FileManager.default.removeItem(atPath: dir) }

    /// A file from a raw header JSON and a data buffer.
    func rawFile(_ header: String, data: [UInt8], pad: Bool = true) -> String {
        var h = Array(header.utf8)
        while pad && (8 + h.count) % 8 != 0 { h.append(0x20) }
        var bytes: [UInt8] = []
        for i in 0..<8 { bytes.append(UInt8(truncatingIfNeeded: UInt64(h.count) >> (8 * UInt64(i)))) }
        bytes += h + data
        let p = dir + "/f\(UUID().uuidString.prefix(6)).safetensors"
        writeBytes(bytes, p)
        return p
    }

    func testRoundTrip() throws {
        let p = dir + "/rt.safetensors"
        let recs = [
            TensorRecord(name: "w", floats: [1, -2, 3.5, 0], shape: [2, 2], dtype: .BF16),
            TensorRecord(name: "b", floats: [0.25], shape: [1]),
            TensorRecord(name: "u", dtype: .U8, shape: [3], bytes: [1, 2, 255]),
            TensorRecord(name: "empty", dtype: .F32, shape: [0, 4], bytes: []),
        ]
        try SafetensorsWriter.write(recs, metadata: ["note": "x"], toFile: p)
        let f = try SafetensorsFile(path: p)
        XCTAssertEqual(f.metadata["format"], "pt")
        XCTAssertEqual(f.metadata["note"], "x")
        XCTAssertEqual(try f.tensor("w").floats(), [1, -2, 3.5, 0])
        XCTAssertEqual(try f.tensor("w").dtype, .BF16)
        XCTAssertEqual(try f.tensor("b").floats(), [0.25])
        XCTAssertEqual(try f.tensor("u").bytes(), [1, 2, 255])
        XCTAssertEqual(try f.tensor("empty").shape, [0, 4])
        let raw = try Data(contentsOf: URL(fileURLWithPath: p))
        let n = raw.prefix(8).enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
        XCTAssertEqual((8 + n) % 8, 0, "header must be padded to a multiple of 8")
        // No temporary files left beside the output.
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir), ["rt.safetensors"])
    }

    func testReadsFilesWrittenByPython() throws {
        let f = try SafetensorsFile(path: Fixtures.path("tiny-llama/model.safetensors"))
        XCTAssertTrue(f.names.contains("model.embed_tokens.weight"))
        XCTAssertEqual(f.info("model.layers.0.self_attn.q_proj.weight")?.shape, [64, 64])
        let store = try WeightStore(directory: Fixtures.path("tiny-llama"))
        XCTAssertEqual(store.names.count, f.names.count)
    }

    func testTruncatedFile() {
        let p = dir + "/short.safetensors"
        writeBytes([1, 2, 3], p)
        assertThrows(try SafetensorsFile(path: p), contains: "truncated")
        let full = try! Data(contentsOf: URL(fileURLWithPath: Fixtures.path("tiny-llama/model.safetensors")))
        let cut = dir + "/cut.safetensors"
        writeData(full.prefix(full.count - 100), cut)
        assertThrows(try SafetensorsFile(path: cut), contains: "cut.safetensors")
    }

    func testHeaderLengthPastFile() {
        var b: [UInt8] = [0xFF, 0xFF, 0, 0, 0, 0, 0, 0]
        b += Array("{}".utf8)
        let p = dir + "/h.safetensors"
        writeBytes(b, p)
        assertThrows(try SafetensorsFile(path: p), contains: "runs past the end")
        let huge = dir + "/huge.safetensors"
        writeBytes([0, 0, 0, 0, 0, 0, 0, 0x10] + Array("{}".utf8), huge)
        assertThrows(try SafetensorsFile(path: huge), contains: "header length")
    }

    func testOverlappingAndHoleyOffsets() {
        let overlap = rawFile(#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#, data: [UInt8](repeating: 0, count: 12))
        assertThrows(try SafetensorsFile(path: overlap), contains: "overlaps")
        let hole = rawFile(#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}"#, data: [UInt8](repeating: 0, count: 12))
        assertThrows(try SafetensorsFile(path: hole), contains: "hole")
        let trailing = rawFile(#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#, data: [UInt8](repeating: 0, count: 9))
        assertThrows(try SafetensorsFile(path: trailing), contains: "trailing")
        let past = rawFile(#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#, data: [UInt8](repeating: 0, count: 8))
        assertThrows(try SafetensorsFile(path: past), contains: "truncated")
    }

    func testWrongSizeForDtype() {
        let p = rawFile(#"{"a":{"dtype":"BF16","shape":[3],"data_offsets":[0,8]}}"#, data: [UInt8](repeating: 0, count: 8))
        assertThrows(try SafetensorsFile(path: p), contains: "needs 6")
        let ovf = rawFile(#"{"a":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,8]}}"#, data: [UInt8](repeating: 0, count: 8))
        assertThrows(try SafetensorsFile(path: ovf), contains: "overflows")
        let neg = rawFile(#"{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}"#, data: [UInt8](repeating: 0, count: 4))
        assertThrows(try SafetensorsFile(path: neg), contains: "negative")
        let dt = rawFile(#"{"a":{"dtype":"Q4","shape":[1],"data_offsets":[0,1]}}"#, data: [0])
        assertThrows(try SafetensorsFile(path: dt), contains: "unsupported dtype")
    }

    func testBadHeaderJSON() {
        let p = rawFile("{not json", data: [])
        assertThrows(try SafetensorsFile(path: p), contains: "invalid safetensors header")
        let arr = rawFile("[1,2]", data: [])
        assertThrows(try SafetensorsFile(path: arr), contains: "not an object")
        let dup = rawFile(#"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}"#, data: [0])
        assertThrows(try SafetensorsFile(path: dup), contains: "duplicate")
        let meta = rawFile(#"{"__metadata__":{"k":1}}"#, data: [])
        assertThrows(try SafetensorsFile(path: meta), contains: "__metadata__")
        var bin: [UInt8] = [4, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFE, 0x7B, 0x7D]
        bin += []
        let p2 = dir + "/bin.safetensors"
        writeBytes(bin, p2)
        assertThrows(try SafetensorsFile(path: p2), contains: "invalid safetensors header")
    }

    func testRandomCorruptionNeverCrashes() throws {
        let good = try Data(contentsOf: URL(fileURLWithPath: Fixtures.path("peft/tiny-llama-r8-all-linear/adapter_model.safetensors")))
        var rng = Xoshiro256(seed: 99)
        for i in 0..<300 {
            var b = [UInt8](good.prefix(4096))
            for _ in 0..<(1 + Int(rng.next() % 4)) {
                let pos = Int(rng.next() % UInt64(min(b.count, 512)))
                b[pos] = UInt8(truncatingIfNeeded: rng.next())
            }
            let p = dir + "/c\(i).safetensors"
            writeBytes(b, p)
            _ = try? SafetensorsFile(path: p)  // must return or throw, never trap
        }
    }

    func testShardedIndexAndMissingShard() throws {
        let out = dir + "/sharded"
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        let recs = (0..<5).map { TensorRecord(name: "t\($0)", floats: [Float](repeating: Float($0), count: 100), shape: [100]) }
        let files = try ShardedWriter.write(recs, to: out, maxShardSize: 900)
        XCTAssertEqual(files.count, 4)  // 3 shards of ≤ 900 bytes + index
        XCTAssertTrue(files.contains("model-00001-of-00003.safetensors"))
        let store = try WeightStore(directory: out)
        XCTAssertEqual(store.names, ["t0", "t1", "t2", "t3", "t4"])
        XCTAssertEqual(try store.tensor("t3").floats()[0], 3)
        let index = try jsonObject(String(contentsOfFile: out + "/model.safetensors.index.json", encoding: .utf8))
        XCTAssertEqual(index["metadata"]?["total_size"], .int(2000))
        try FileManager.default.removeItem(atPath: out + "/model-00002-of-00003.safetensors")
        assertThrows(try WeightStore(directory: out), contains: "does not exist")
    }

    func testParseSize() {
        XCTAssertEqual(ShardedWriter.parseSize("5GB"), 5_000_000_000)
        XCTAssertEqual(ShardedWriter.parseSize("2GiB"), 2 << 30)
        XCTAssertEqual(ShardedWriter.parseSize("500MB"), 500_000_000)
        XCTAssertEqual(ShardedWriter.parseSize("1234"), 1234)
        XCTAssertNil(ShardedWriter.parseSize("big"))
        XCTAssertNil(ShardedWriter.parseSize("-5MB"))
    }
}
