// ComputeDTypeTests: `--compute-dtype bf16` against PyTorch bf16 references (Fixtures/forward/<case>/bf16.safetensors,
// scripts/gen_bf16_fixtures.py) — logits, loss and LoRA gradients, on f32, bf16-weight-free and NF4 bases; the
// bf16 rounding kernel against the scalar conversion; the oneDNN backend against the emulation where the CPU
// has bf16; and the dtype's resolution, flags, recording and resume rules.
import XCTest
@testable import LoRAShared
@testable import LoRAModel
@testable import LoRAEngine
@testable import LoRATrain
@testable import LoRATokenizer

final class ComputeDTypeTests: XCTestCase {
    static let emulated = ComputeChoice(dtype: .bf16, backend: .emulated)

    /// Against `*_ops` (the same bf16-operand products in torch, another summation order): a different fp32 sum
    /// can round an activation to the neighbouring bf16 value (2⁻⁸ relative), so logits agree to ~1e-3, not 1e-6 —
    /// relative to the logits' scale, max(1, max |logit|) (the family fixtures' logits reach 2.2–4.6).
    static let opsLogitTolerance: Float = 3e-3
    static let opsLossTolerance = 2e-4
    static let opsGradTolerance: Float = 5e-3   // max |Δg| / max |g|
    /// Against torch.autocast bf16 (every Linear output and the LoRA path rounded to bf16 too): within these, or
    /// within twice autocast's own distance from fp32 where that is larger (models with larger activations).
    static let autocastLogitTolerance: Float = 1e-2
    static let autocastLossTolerance = 1e-3
    static let autocastGradTolerance: Float = 2e-2

    func load(_ name: String) throws -> (Transformer, TokenBatch, SafetensorsFile, SafetensorsFile) {
        let (tr, _, batch, io) = try loadForwardCase(name)
        return (tr, batch, io, try SafetensorsFile(path: Fixtures.path("forward/" + name) + "/bf16.safetensors"))
    }

    func testRoundingMatchesTheScalarConversion() {
        var rng = Xoshiro256(seed: 3)
        var v: [Float] = [0, -0, 1, -1, .infinity, -.infinity, .nan, -.nan, .greatestFiniteMagnitude, -.greatestFiniteMagnitude,
                          .leastNonzeroMagnitude, Float(bitPattern: 0x3F80_8000), Float(bitPattern: 0x3F81_8000),  // ties
                          Float(bitPattern: 0x7F7F_FFFF), Float(bitPattern: 0x7FC1_2345), Float(bitPattern: 0xFF81_0001)]
        for _ in 0..<10_000 { v.append(Float(bitPattern: UInt32(truncatingIfNeeded: rng.next()))) }
        var w = v
        w.withUnsafeMutableBufferPointer { Kernels.roundToBF16InPlace($0.baseAddress!, count: $0.count) }
        for (x, y) in zip(v, w) {
            XCTAssertEqual(y.bitPattern, UInt32(floatToBF16(x)) << 16, "\(x.bitPattern)")
        }
    }

    /// The 4-bit → bf16 decoder (AVX-512 where present) equals code[q] · absmax rounded by the scalar conversion,
    /// bit for bit: odd and even starts, runs that end inside a block, block sizes 64 and 128, a zero, a tiny
    /// (products below the normal range) and an infinite absmax (the scalar path).
    func testFourBitDecodeMatchesTheScalarConversion() {
        var rng = Xoshiro256(seed: 7)
        let code = FourBit.nf4Code
        let packed = (0..<4096).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
        for bs in [64, 128] {
            var absmax = (0..<(8192 / bs)).map { _ in Float(rng.next() % 1000 + 1) / 7919 }
            absmax[1] = 0; absmax[2] = 1e-39; absmax[3] = .infinity; absmax[4] = 3.4e38
            for (start, count) in [(0, 8192), (1, 8191), (62, 100), (64, 31), (130, 4000), (7, 1)] {
                var got = [UInt16](repeating: 0, count: count)
                packed.withUnsafeBufferPointer { p in absmax.withUnsafeBufferPointer { a in code.withUnsafeBufferPointer { c in
                    OneDNN.decode4Bit(packed: p.baseAddress!, absmax: a.baseAddress!, blocksize: bs, code: c.baseAddress!,
                                      start: start, count: count, into: &got)
                }}}
                for i in 0..<count {
                    let j = start + i, byte = packed[j >> 1]
                    let want = floatToBF16(code[Int(j & 1 == 0 ? byte >> 4 : byte & 15)] * absmax[j / bs])
                    if got[i] != want { XCTFail("bs \(bs) start \(start) element \(j): \(got[i]) != \(want)"); break }
                }
            }
        }
    }

    func check(_ name: String) throws {
        let (tr, batch, io, ref) = try load(name)
        let f32Logits = try io.tensor("logits_lora").floats(), f32Loss = Double(try io.tensor("loss_lora").floats()[0])
        let scale = max(1, f32Logits.map(abs).max()!)
        tr.compute = ComputeDTypeTests.emulated
        let out = try tr.forward(batch, wantLogits: true)
        let loss = out.nllSum / Double(out.tokens)
        let g = LoRAGradients(for: tr.lora)
        _ = try tr.trainStep(batch, lossScale: 1 / Float(out.tokens), grads: g)
        let autocastLogits = try ref.tensor("logits_autocast").floats()
        let autocastLoss = Double(try ref.tensor("loss_autocast").floats()[0])
        let bandLogits = 2 * maxAbsDiff(autocastLogits, f32Logits), bandLoss = 2 * abs(autocastLoss - f32Loss)
        for (kind, lt, losst, gt) in [("ops", ComputeDTypeTests.opsLogitTolerance * scale, ComputeDTypeTests.opsLossTolerance, ComputeDTypeTests.opsGradTolerance),
                                      ("autocast", max(ComputeDTypeTests.autocastLogitTolerance, bandLogits),
                                       max(ComputeDTypeTests.autocastLossTolerance, bandLoss), ComputeDTypeTests.autocastGradTolerance)] {
            let dl = maxAbsDiff(out.logits!, try ref.tensor("logits_" + kind).floats())
            let refLoss = Double(try ref.tensor("loss_" + kind).floats()[0])
            var gmax: Float = 0, gdiff: Float = 0
            for m in tr.lora.keys {
                for (w, mine) in [("lora_A", g.a[m]!), ("lora_B", g.b[m]!)] {
                    let r = try ref.tensor("\(m).\(w).weight.grad_\(kind)").floats()
                    gmax = max(gmax, r.map(abs).max()!)
                    gdiff = max(gdiff, maxAbsDiff(mine, r))
                }
            }
            print("\(name) bf16 vs torch \(kind): max |Δlogit| \(dl), Δloss \(loss - refLoss), max |Δg|/max|g| \(gdiff / gmax)")
            XCTAssertLessThan(dl, lt, "\(name) \(kind) logits")
            XCTAssertEqual(loss, refLoss, accuracy: losst, "\(name) \(kind) loss")
            XCTAssertLessThan(gdiff / gmax, gt, "\(name) \(kind) gradients")
        }
    }

    func testLlamaMatchesTorchBF16() throws { try check("llama-gqa-tied") }
    func testQwen2BiasMatchesTorchBF16() throws { try check("qwen2-bias") }
    func testNF4MatchesTorchBF16() throws { try check("llama-nf4") }
    /// The families of FamilyParityTests in bf16 compute (fixtures from gen_bf16_fixtures.py after gen_family_fixtures.py).
    func testFamiliesMatchTorchBF16() throws {
        for c in ["qwen3-qknorm", "qwen3-tied-sliding", "mistral-sliding", "phi3-fused", "phi3-longrope-partial",
                  "gemma2-softcap", "gemma3-local-rope"] { try check(c) }
    }

    /// bf16 is not f32 (the products really are rounded), and f32 after bf16 is f32 again (no state left over).
    func testSwitchingBackToF32IsExact() throws {
        let (tr, batch, io, _) = try load("llama-gqa-tied")
        let f32 = try tr.forward(batch, wantLogits: true).logits!
        tr.compute = ComputeDTypeTests.emulated
        let b = try tr.forward(batch, wantLogits: true).logits!
        XCTAssertGreaterThan(maxAbsDiff(b, f32), 1e-5)
        tr.compute = .f32
        XCTAssertEqual(try tr.forward(batch, wantLogits: true).logits!, f32)
        XCTAssertLessThan(maxAbsDiff(f32, try io.tensor("logits_lora").floats()), ForwardParityTests.logitTolerance)
    }

    /// Decoding (a few rows: products straight from the stored weights) in bf16 equals the full bf16 forward.
    func testDecodeMatchesForwardInBF16() throws {
        let (tr, batch, _, _) = try load("llama-gqa-tied")
        tr.compute = ComputeDTypeTests.emulated
        let T = batch.lengths[0]
        let ids = Array(batch.tokens[0..<T])
        let full = try tr.forward(TokenBatch(tokens: ids, labels: ids, lengths: [T], batch: 1, seq: T), wantLogits: true).logits!
        let cache = KVCache(config: tr.config, capacity: T)
        let V = tr.config.vocabSize
        var worst: Float = 0
        for t in 0..<T {
            let got = try tr.decode([ids[t]], cache: cache)
            worst = max(worst, maxAbsDiff(got, Array(full[(t * V)..<((t + 1) * V)])))
        }
        XCTAssertLessThan(worst, ComputeDTypeTests.opsLogitTolerance)
    }

    /// oneDNN's bf16 matmul gives the emulation's numbers (summation order aside) — where the CPU has bf16.
    func testOneDNNMatchesEmulation() throws {
        guard CPUFeatures.hasBF16(), OneDNN.probe() == nil else {
            throw XCTSkip("this CPU has no AVX512-BF16 / AMX-BF16 (or oneDNN cannot run bf16 here): \(OneDNN.probe() ?? "")")
        }
        let (tr, batch, _, _) = try load("llama-gqa-tied")
        tr.compute = ComputeDTypeTests.emulated
        let e = try tr.forward(batch, wantLogits: true).logits!
        tr.compute = ComputeChoice(dtype: .bf16, backend: .onednn)
        let o = try tr.forward(batch, wantLogits: true).logits!
        XCTAssertLessThan(maxAbsDiff(e, o), ComputeDTypeTests.opsLogitTolerance, OneDNN.lastImplementation)
    }

    /// oneDNN against the emulation, forward and LoRA gradients (so the activation gradient dy·W too), on each
    /// way a frozen weight reaches oneDNN: fp32 weights expanded and stacked (the fixture), bf16 weights multiplied
    /// where they are mapped, one product per module (a TinyModel), and NF4 decoded to bf16 (its lora-quantize).
    func testOneDNNMatchesEmulationOnEveryStorage() throws {
        guard CPUFeatures.hasBF16(), OneDNN.probe() == nil else {
            throw XCTSkip("this CPU has no AVX512-BF16 / AMX-BF16 (or oneDNN cannot run bf16 here): \(OneDNN.probe() ?? "")")
        }
        let dir = makeTempDir("onednn")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try TinyModel.write(to: dir + "/bf16")
        XCTAssertEqual(try runTool("lora-quantize", [dir + "/bf16", "-o", dir + "/nf4", "-q"]).status, 0)
        let r = try runTool("lora-init", [dir + "/bf16", "-o", dir + "/a", "--rank", "4", "--targets", "all-linear", "--init", "gaussian", "-q"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let t: [Int32] = (0..<24).map { Int32(($0 * 37 + 5) % 300) }
        let tiny = TokenBatch(tokens: t, labels: t, lengths: [t.count], batch: 1, seq: t.count)
        var cases: [(String, Transformer, TokenBatch)] = []
        let (fx, fxBatch, _, _) = try load("llama-gqa-tied")
        cases.append(("fp32 fixture", fx, fxBatch))
        for kind in ["bf16", "nf4"] {
            let m = try ModelDir(path: dir + "/" + kind)
            let tr = try Transformer(model: m)
            try tr.attach(try Adapter.load(dir + "/a"), linears: try m.linearModules())
            cases.append((kind, tr, tiny))
        }
        for (name, tr, batch) in cases {
            var logits: [[Float]] = [], grads: [LoRAGradients] = []
            for choice in [ComputeDTypeTests.emulated, ComputeChoice(dtype: .bf16, backend: .onednn)] {
                tr.compute = choice
                logits.append(try tr.forward(batch, wantLogits: true).logits!)
                let g = LoRAGradients(for: tr.lora)
                _ = try tr.trainStep(batch, lossScale: 1 / Float(batch.lengths.reduce(0, +)), grads: g)
                grads.append(g)
            }
            XCTAssertLessThan(maxAbsDiff(logits[0], logits[1]), ComputeDTypeTests.opsLogitTolerance * max(1, logits[0].map(abs).max()!), name)
            var gmax: Float = 0, gdiff: Float = 0
            for m in tr.lora.keys {
                for (e, o) in [(grads[0].a[m]!, grads[1].a[m]!), (grads[0].b[m]!, grads[1].b[m]!)] {
                    gmax = max(gmax, e.map(abs).max()!)
                    gdiff = max(gdiff, maxAbsDiff(e, o))
                }
            }
            XCTAssertGreaterThan(gmax, 0, name)
            XCTAssertLessThan(gdiff / gmax, ComputeDTypeTests.opsGradTolerance, name)
        }
    }

    func testResolution() throws {
        XCTAssertEqual(try ComputeChoice.resolve(.f32, environment: [:]), .f32)
        // Forced fallback: auto is f32, bf16 is an error naming the missing feature and the fallback flag.
        let fb = ["LORA_COMPUTE_FALLBACK": "1"]
        XCTAssertEqual(try ComputeChoice.resolve(.auto, environment: fb), .f32)
        XCTAssertThrowsError(try ComputeChoice.resolve(.bf16, environment: fb)) { e in
            let s = "\(e)"
            XCTAssertTrue(s.contains("AVX512-BF16") && s.contains("--compute-dtype f32"), s)
        }
        XCTAssertEqual(try ComputeChoice.resolve(.bf16, environment: fb.merging(["LORA_BF16_EMULATE": "1"]) { $1 }),
                       ComputeDTypeTests.emulated)
        let auto = try ComputeChoice.resolve(.auto, environment: [:])
        XCTAssertEqual(auto.dtype, CPUFeatures.hasBF16([:]) && OneDNN.probe() == nil ? .bf16 : .f32)
        if !CPUFeatures.hasBF16([:]) {
            XCTAssertThrowsError(try ComputeChoice.resolve(.bf16, environment: [:])) { e in
                XCTAssertTrue("\(e)".contains("avx512_bf16"), "\(e)")
            }
        }
    }
}
