// MergeTests: lora-merge on a tiny Llama: the merged model's logits equal base + adapter, a zero adapter leaves
// every weight bit-identical, weighted sums of several adapters, 4-bit bases (dequantized, --base-full,
// --requantize), sharding, and every bad input of the issue (mixed models, non-numeric weight, interruption).
import Foundation
import XCTest
@testable import LoRAShared
@testable import LoRAModel
@testable import LoRAEngine
@testable import LoRATrain
@testable import LoRATokenizer

final class MergeTests: XCTestCase {
    var dir = ""
    override func setUp() { dir = makeTempDir("merge") }
    override func tearDown() { try? FileManager.default.removeItem(atPath: dir) }

    /// A tiny base model and an all-linear adapter with random A and B (so the merge changes every Linear).
    func makeAdapter(_ model: String, _ out: String, seed: UInt64, rslora: Bool = false, zeroB: Bool = false) throws -> Adapter {
        let cfg = LoRAConfig(r: 4, alpha: 8, dropout: 0, targets: .allLinear, useRslora: rslora)
        let a = try Adapter.initialize(config: cfg, model: try ModelDir(path: model), initMode: .kaiming, seed: seed)
        if !zeroB {
            var rng = Xoshiro256(seed: seed + 100)
            for n in a.moduleNames { a.modules[n]!.b = a.modules[n]!.b.map { _ in rng.normal() * 0.1 } }
        }
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        try a.save(into: out)
        return a
    }

    func logits(_ model: String, adapter: Adapter? = nil, ids: [Int32]) throws -> [Float] {
        let m = try ModelDir(path: model)
        let tr = try Transformer(model: m)
        if let a = adapter { try tr.attach(a, linears: try m.linearModules()) }
        return try tr.forward(TokenBatch(tokens: ids, labels: ids, lengths: [ids.count], batch: 1, seq: ids.count), wantLogits: true).logits!
    }

    let ids: [Int32] = [5, 17, 300, 42, 1000, 7, 99, 1500, 3, 64, 128, 900]

    func testMergedLogitsEqualBasePlusAdapter() throws {
        try TinyModel.write(to: dir + "/base")
        for rslora in [false, true] {
            let a = try makeAdapter(dir + "/base", dir + "/a\(rslora)", seed: 3, rslora: rslora)
            let r = try runTool("lora-merge", [dir + "/base", "--adapter", dir + "/a\(rslora)", "-o", dir + "/m\(rslora)", "--dtype", "float32"])
            XCTAssertEqual(r.status, 0, r.stderr)
            let s = try jsonObject(r.stdout)
            XCTAssertEqual(s["merged_modules"], .int(14))
            let merged = try logits(dir + "/m\(rslora)", ids: ids)
            let ref = try logits(dir + "/base", adapter: a, ids: ids)
            let scale = ref.map { abs($0) }.max()!
            XCTAssertLessThan(maxAbsDiff(merged, ref) / scale, 1e-5, "rslora \(rslora)")
            // The adapter does change the logits, so the comparison means something.
            XCTAssertGreaterThan(maxAbsDiff(try logits(dir + "/base", ids: ids), ref) / scale, 1e-3)
            let cfg = try jsonObject(try String(contentsOfFile: dir + "/m\(rslora)/config.json", encoding: .utf8))
            XCTAssertEqual(cfg["torch_dtype"], .string("float32"))
            XCTAssertTrue(FileManager.default.fileExists(atPath: dir + "/m\(rslora)/tokenizer.json"))
        }
    }

    func testZeroAdapterLeavesEveryWeightBitIdentical() throws {
        try TinyModel.write(to: dir + "/base")
        // A -0.0 in a targeted weight must stay -0.0 (adding a zero delta would turn it into +0.0).
        let orig = try WeightStore(directory: dir + "/base")
        let recs = try orig.names.map { n -> TensorRecord in
            let t = try orig.tensor(n)
            guard n == "model.layers.0.self_attn.q_proj.weight" else { return TensorRecord(name: n, floats: t.floats(), shape: t.shape, dtype: t.dtype) }
            var v = t.floats()
            for i in stride(from: 0, to: v.count, by: 7) { v[i] = -0.0 }
            return TensorRecord(name: n, floats: v, shape: t.shape, dtype: t.dtype)
        }
        try SafetensorsWriter.write(recs, toFile: dir + "/base/model.safetensors.new")
        XCTAssertEqual(rename(dir + "/base/model.safetensors.new", dir + "/base/model.safetensors"), 0)
        let base = try ModelDir(path: dir + "/base")
        _ = try makeAdapter(dir + "/base", dir + "/zero", seed: 1, zeroB: true)
        let r = try runTool("lora-merge", [dir + "/base", "--adapter", dir + "/zero:0.5", "-o", dir + "/m"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let merged = try ModelDir(path: dir + "/m")
        XCTAssertEqual(merged.weights.names.sorted(), base.weights.names.sorted())
        for n in base.weights.names {
            let a = try base.weights.tensor(n), b = try merged.weights.tensor(n)
            XCTAssertEqual(a.dtype, b.dtype, n)
            XCTAssertEqual(a.shape, b.shape, n)
            XCTAssertTrue(a.bytes() == b.bytes(), "\(n) changed")
        }
        // Same writer, same tensors: the file itself is identical.
        XCTAssertEqual(FileManager.default.contents(atPath: dir + "/base/model.safetensors"),
                       FileManager.default.contents(atPath: dir + "/m/model.safetensors"))
    }

    func testWeightedSumOfTwoAdapters() throws {
        try TinyModel.write(to: dir + "/base")
        let a1 = try makeAdapter(dir + "/base", dir + "/a1", seed: 5)
        let a2 = try makeAdapter(dir + "/base", dir + "/a2", seed: 6, rslora: true)
        let r = try runTool("lora-merge", [dir + "/base", "--adapter", dir + "/a1:0.75", "--adapter", dir + "/a2:-0.5",
                                           "-o", dir + "/m", "--dtype", "fp32"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let base = try ModelDir(path: dir + "/base"), merged = try ModelDir(path: dir + "/m")
        for m in try base.linearModules() {
            let w = try base.weights.tensor(m.name + ".weight").floats()
            let got = try merged.weights.tensor(m.name + ".weight").floats()
            // Reference in Double: W + 0.75·s₁·B₁A₁ − 0.5·s₂·B₂A₂.
            var worst = 0.0
            for o in 0..<m.outFeatures {
                for i in 0..<m.inFeatures {
                    var v = Double(w[o * m.inFeatures + i])
                    for (ad, wt) in [(a1, 0.75), (a2, -0.5)] {
                        let l = ad.modules[m.name]!
                        var s = 0.0
                        for k in 0..<l.r { s += Double(l.b[o * l.r + k]) * Double(l.a[k * m.inFeatures + i]) }
                        v += wt * ad.config.scaling(for: m.name) * s
                    }
                    worst = max(worst, abs(v - Double(got[o * m.inFeatures + i])))
                }
            }
            XCTAssertLessThan(worst, 1e-6, m.name)
        }
    }

    func testQuantizedBase() throws {
        try TinyModel.write(to: dir + "/base")
        XCTAssertEqual(try runTool("lora-quantize", [dir + "/base", "-o", dir + "/nf4", "-q"]).status, 0)
        let a = try makeAdapter(dir + "/nf4", dir + "/qa", seed: 9)

        // Dequantize-then-merge: warns, writes a plain bf16 model whose logits are the 4-bit base + adapter's.
        let r = try runTool("lora-merge", [dir + "/nf4", "--adapter", dir + "/qa", "-o", dir + "/m", "--dtype", "float32"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stderr.contains("warning:") && r.stderr.contains("--base-full"), r.stderr)
        let merged = try ModelDir(path: dir + "/m")
        XCTAssertFalse(merged.isQuantized)
        XCTAssertNil(merged.config.raw["quantization_config"])
        let ml = try logits(dir + "/m", ids: ids), ref = try logits(dir + "/nf4", adapter: a, ids: ids)
        XCTAssertLessThan(maxAbsDiff(ml, ref) / ref.map { abs($0) }.max()!, 1e-5)

        // --base-full: merged onto the original weights; with a zero adapter that is the original model exactly.
        _ = try makeAdapter(dir + "/nf4", dir + "/qzero", seed: 9, zeroB: true)
        let f = try runTool("lora-merge", [dir + "/nf4", "--adapter", dir + "/qzero", "--base-full", dir + "/base", "-o", dir + "/full"])
        XCTAssertEqual(f.status, 0, f.stderr)
        XCTAssertFalse(f.stderr.contains("warning:"), f.stderr)
        XCTAssertEqual(FileManager.default.contents(atPath: dir + "/base/model.safetensors"),
                       FileManager.default.contents(atPath: dir + "/full/model.safetensors"))
        let fl = try runTool("lora-merge", [dir + "/nf4", "--adapter", dir + "/qa", "--base-full", dir + "/base", "-o", dir + "/full32", "--dtype", "float32"])
        XCTAssertEqual(fl.status, 0, fl.stderr)
        let fref = try logits(dir + "/base", adapter: a, ids: ids)
        XCTAssertLessThan(maxAbsDiff(try logits(dir + "/full32", ids: ids), fref) / fref.map { abs($0) }.max()!, 1e-5)

        // A --base-full the 4-bit model was not made from gets a warning.
        try TinyModel.write(to: dir + "/other", seed: 2)
        let o = try runTool("lora-merge", [dir + "/nf4", "--adapter", dir + "/qa", "--base-full", dir + "/other", "-o", dir + "/o"])
        XCTAssertEqual(o.status, 0, o.stderr)
        XCTAssertTrue(o.stderr.contains("does not quantize to the 4-bit weights"), o.stderr)
        // --base-full with a full-precision model argument makes no sense.
        assertToolError(try runTool("lora-merge", [dir + "/base", "--adapter", dir + "/qa", "--base-full", dir + "/base", "-o", dir + "/x"]),
                        contains: "--base-full is for a 4-bit model", code: 64)
    }

    func testRequantizeAndShards() throws {
        try TinyModel.write(to: dir + "/base")
        _ = try makeAdapter(dir + "/base", dir + "/zero", seed: 1, zeroB: true)
        // Zero adapter + --requantize nf4 = lora-quantize of the base, byte for byte.
        XCTAssertEqual(try runTool("lora-quantize", [dir + "/base", "-o", dir + "/nf4", "-q"]).status, 0)
        let r = try runTool("lora-merge", [dir + "/base", "--adapter", dir + "/zero", "-o", dir + "/rq", "--requantize", "nf4"])
        XCTAssertEqual(r.status, 0, r.stderr)
        for f in ["model.safetensors", "config.json"] {
            XCTAssertEqual(FileManager.default.contents(atPath: dir + "/nf4/" + f), FileManager.default.contents(atPath: dir + "/rq/" + f), f)
        }
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasPrefix(".") }, [], "scratch folder left behind")

        // Sharded output with an index; the model loads and computes the same logits.
        _ = try makeAdapter(dir + "/base", dir + "/a", seed: 4)
        let s = try runTool("lora-merge", [dir + "/base", "--adapter", dir + "/a", "-o", dir + "/sh", "--max-shard-size", "20KB"])
        XCTAssertEqual(s.status, 0, s.stderr)
        XCTAssertTrue(FileManager.default.fileExists(atPath: dir + "/sh/model.safetensors.index.json"))
        let one = try runTool("lora-merge", [dir + "/base", "--adapter", dir + "/a", "-o", dir + "/one"])
        XCTAssertEqual(one.status, 0, one.stderr)
        XCTAssertEqual(try logits(dir + "/sh", ids: ids), try logits(dir + "/one", ids: ids))
    }

    func testBadInput() throws {
        try TinyModel.write(to: dir + "/base")
        _ = try makeAdapter(dir + "/base", dir + "/a", seed: 1)
        // An adapter for another model (other shapes) next to a good one: refused, naming the adapter.
        let wrong = Adapter(config: LoRAConfig(r: 2, alpha: 4, dropout: 0, targets: .names(["q_proj"])),
                            modules: [("model.layers.0.self_attn.q_proj", LoRAWeights(r: 2, inFeatures: 64, outFeatures: 64,
                                a: [Float](repeating: 0.1, count: 128), b: [Float](repeating: 0.1, count: 128)))], source: "x")
        try FileManager.default.createDirectory(atPath: dir + "/wrong", withIntermediateDirectories: true)
        try wrong.save(into: dir + "/wrong")
        assertToolError(try runTool("lora-merge", [dir + "/base", "--adapter", dir + "/a", "--adapter", dir + "/wrong", "-o", dir + "/m"]),
                        contains: dir + "/wrong")
        // A weight that is not a number.
        for bad in ["abc", "", "nan", "1e999"] {
            assertToolError(try runTool("lora-merge", [dir + "/base", "--adapter", dir + "/a:" + bad, "-o", dir + "/m"]),
                            contains: "is not a number", code: 64)
        }
        assertToolError(try runTool("lora-merge", [dir + "/base", "-o", dir + "/m"]), contains: "--adapter", code: 64)
        assertToolError(try runTool("lora-merge", [dir + "/base", "--adapter", dir + "/a", "-o", dir + "/m", "--dtype", "int8"]), contains: "--dtype", code: 64)
        assertToolError(try runTool("lora-merge", [dir + "/base", "--adapter", dir + "/missing", "-o", dir + "/m"]), contains: "missing")
        // An interrupted merge (the disk fills while writing the weights) leaves no output and no temporary folder.
        assertToolError(try runTool("lora-merge", [dir + "/base", "--adapter", dir + "/a", "-o", dir + "/m"],
                                    env: ["LORA_TEST_FAIL_WRITES": "model.safetensors"]), contains: "No space left")
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/m"))
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasPrefix(".") }, [])
        // An existing output is kept unless --force.
        XCTAssertEqual(try runTool("lora-merge", [dir + "/base", "--adapter", dir + "/a", "-o", dir + "/m"]).status, 0)
        assertToolError(try runTool("lora-merge", [dir + "/base", "--adapter", dir + "/a", "-o", dir + "/m"]), contains: "--force")
        XCTAssertEqual(try runTool("lora-merge", [dir + "/base", "--adapter", dir + "/a", "-o", dir + "/m", "--force"]).status, 0)
    }
}
