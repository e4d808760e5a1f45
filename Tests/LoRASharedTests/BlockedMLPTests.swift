// BlockedMLPTests: a training step whose MLP runs in blocks of its intermediate dimension (BlockedMLP.swift, what
// the 7B shapes do at seq 1024) gives the loss and every LoRA gradient of the unblocked step — fp32 and bf16
// compute (oneDNN and emulated), a 4-bit and a bf16-stored base, phi3's fused gate_up_proj, gemma's GeGLU with
// sandwich norms, LoRA dropout and activation checkpointing — with three blocks, the last one narrower; and the
// weight windows the blocks multiply hold exactly the stored weight's rows and columns.
import Foundation
import XCTest
@testable import LoRAShared
@testable import LoRAModel
@testable import LoRAEngine
@testable import LoRAKernels

final class BlockedMLPTests: XCTestCase {
    /// Runs body with the arena sized for blocks of `width` intermediate columns (alignment 8), restoring after.
    func withBlocks<T>(rows: Int, width: Int, _ body: () throws -> T) rethrows -> T {
        let (arena, align) = (Transformer.mlpArenaFloats, Transformer.mlpBlockAlign)
        defer { Transformer.mlpArenaFloats = arena; Transformer.mlpBlockAlign = align }
        Transformer.mlpBlockAlign = 8
        Transformer.mlpArenaFloats = 3 * rows * width
        return try body()
    }

    /// The step's (loss, gradients) unblocked and blocked; asserts the blocked step really ran in blocks.
    func compare(_ name: String, compute: ComputeChoice, dropout: Float = 0, checkpoint: Bool = false, tolerance: Float,
                 file: StaticString = #filePath, line: UInt = #line) throws {
        let (tr, model, batch, _) = try loadForwardCase(name)
        tr.compute = compute
        let rows = batch.batch * batch.seq, inter = model.config.intermediateSize
        let scored = batch.shiftedTargets.filter { $0 >= 0 }.count
        let drop = dropout > 0 ? LoRADropout(rate: dropout, seed: 7, step: 3) : nil
        let whole = LoRAGradients(for: tr.lora), blocked = LoRAGradients(for: tr.lora)
        XCTAssertNil(Transformer.trainMLPBlock(config: model.config, rows: rows, dora: false), file: file, line: line)
        let a = try tr.trainStep(batch, lossScale: 1 / Float(scored), grads: whole, dropout: drop, checkpointLayers: checkpoint)
        // An arena for blocks of about 3/8 of the intermediate size: three blocks (inter 128: 48, 48, 32; 96: 32 each).
        let b = try withBlocks(rows: rows, width: (3 * inter / 8 + 7) / 8 * 8) { () throws -> Transformer.StepResult in
            let w = try XCTUnwrap(Transformer.trainMLPBlock(config: model.config, rows: rows, dora: false), file: file, line: line)
            XCTAssertEqual((inter + w - 1) / w, 3, "\(name): blocks of \(w)", file: file, line: line)
            let r = try tr.trainStep(batch, lossScale: 1 / Float(scored), grads: blocked, dropout: drop, checkpointLayers: checkpoint)
            XCTAssertEqual(tr.trainWorkspace?.mlpBlock, w, "\(name): the step ran blocked", file: file, line: line)
            return r
        }
        XCTAssertEqual(a.tokens, b.tokens, file: file, line: line)
        XCTAssertEqual(a.nllSum, b.nllSum, accuracy: Double(tolerance) * max(1, abs(a.nllSum)), "\(name) loss", file: file, line: line)
        var maxRef: Float = 0, maxErr: Float = 0
        for (k, which) in whole.orderedKeys {
            let u = whole[k, which], v = blocked[k, which]
            maxRef = max(maxRef, u.map(abs).max() ?? 0)
            maxErr = max(maxErr, maxAbsDiff(u, v))
        }
        XCTAssertGreaterThan(maxRef, 0, file: file, line: line)
        XCTAssertLessThan(maxErr / maxRef, tolerance, "\(name) \(compute) dropout \(dropout) checkpoint \(checkpoint): max |Δgrad| \(maxErr) of \(maxRef)",
                          file: file, line: line)
        print("blocked MLP \(name) \(compute.dtype) \(compute.backend) dropout \(dropout) checkpoint \(checkpoint): relative \(maxErr / maxRef)")
    }

    static let onednn = ComputeChoice(dtype: .bf16, backend: .onednn)
    static let emulated = ComputeChoice(dtype: .bf16, backend: .emulated)

    func testNF4BaseFP32() throws {
        try compare("llama-nf4", compute: .f32, tolerance: 1e-5)
        try compare("llama-nf4", compute: .f32, checkpoint: true, tolerance: 1e-5)
    }

    func testNF4BaseBF16() throws {
        try compare("llama-nf4", compute: BlockedMLPTests.onednn, checkpoint: true, tolerance: 2e-3)
        try compare("llama-nf4", compute: BlockedMLPTests.emulated, tolerance: 2e-3)
    }

    func testBF16StoredWeights() throws {
        try compare("llama-bf16-weights", compute: BlockedMLPTests.onednn, checkpoint: true, tolerance: 2e-3)
        try compare("llama-bf16-weights", compute: .f32, tolerance: 1e-5)
    }

    func testDropout() throws {
        try compare("llama-nf4", compute: .f32, dropout: 0.25, tolerance: 1e-5)
        try compare("llama-nf4", compute: .f32, dropout: 0.25, checkpoint: true, tolerance: 1e-5)
    }

    func testFusedGateUp() throws {
        try compare("phi3-fused", compute: .f32, dropout: 0.1, checkpoint: true, tolerance: 1e-5)
    }

    func testGemmaSandwichGeGLU() throws {
        try compare("gemma2-softcap", compute: .f32, checkpoint: true, tolerance: 1e-5)
        try compare("gemma2-softcap", compute: BlockedMLPTests.onednn, tolerance: 2e-3)
    }

    func testQwen2Biases() throws {
        try compare("qwen2-bias", compute: .f32, checkpoint: true, tolerance: 1e-5)
    }

    /// A window of rows and columns expands to exactly those values of the whole weight (fp32 and bf16, 4-bit and
    /// bf16-stored), and multiplies as they do.
    func testWeightWindowsExpandTheirPart() throws {
        for name in ["llama-nf4", "llama-bf16-weights"] {
            let (tr, _, _, _) = try loadForwardCase(name)
            let down = tr.layers[0].down, gate = tr.layers[0].gateUp[0]
            for (w, rows, cols) in [(down, 8..<40, 24..<72), (gate, 40..<104, 0..<gate.inFeatures), (down, 0..<down.outFeatures, 96..<128)] {
                let win = w.window(rows: rows, cols: cols)
                XCTAssertTrue(win.isWindow)
                var whole = [Float](repeating: 0, count: w.numel), part = [Float](repeating: 0, count: win.numel)
                whole.withUnsafeMutableBufferPointer { w.expand(into: $0.baseAddress!) }
                part.withUnsafeMutableBufferPointer { win.expand(into: $0.baseAddress!) }
                let want = rows.flatMap { r in cols.map { c in whole[r * w.inFeatures + c] } }
                XCTAssertEqual(part, want, "\(name) window \(rows) × \(cols)")
                var halves = [UInt16](repeating: 0, count: win.numel)
                halves.withUnsafeMutableBufferPointer { win.expandRowsBF16(0..<win.outFeatures, into: $0.baseAddress!) }
                XCTAssertEqual(halves.map { bf16ToFloat($0) }, want.map { bf16ToFloat(floatToBF16($0)) }, "\(name) bf16 window")
                // A few rows straight from the stored form.
                let x = (0..<(2 * win.inFeatures)).map { Float(($0 * 37) % 11) / 11 - 0.5 }
                var y = [Float](repeating: 0, count: 2 * win.outFeatures)
                x.withUnsafeBufferPointer { xb in y.withUnsafeMutableBufferPointer { yb in
                    win.multiplyDirect(x: xb.baseAddress!, ldx: win.inFeatures, rows: 2, y: yb.baseAddress!, ldy: win.outFeatures, accumulate: false)
                } }
                for i in 0..<2 { for o in 0..<win.outFeatures {
                    var s: Float = 0
                    for j in 0..<win.inFeatures { s += want[o * win.inFeatures + j] * x[i * win.inFeatures + j] }
                    XCTAssertEqual(y[i * win.outFeatures + o], s, accuracy: 1e-4)
                } }
            }
        }
    }

    /// The head's logit-gradient chunk converted to bf16 in place, and back, equals the copying conversion.
    func testInPlaceBF16Conversion() {
        let rows = 5, ld = 77, cols = 70
        let src = (0..<(rows * ld)).map { Float(sin(Double($0) * 0.37)) * 3 }
        var buf = src
        var want = [UInt16](repeating: 0, count: rows * ld)
        src.withUnsafeBufferPointer { s in want.withUnsafeMutableBufferPointer { OneDNN.convert(s.baseAddress!, ld: ld, rows: rows, cols: cols, into: $0.baseAddress!, ldd: ld) } }
        buf.withUnsafeMutableBufferPointer { b in
            let h = OneDNN.convertInPlace(b.baseAddress!, ld: ld, rows: rows, cols: cols)
            for r in 0..<rows { for c in 0..<cols { XCTAssertEqual(h[r * ld + c], want[r * ld + c], "row \(r) col \(c)") } }
            OneDNN.widenInPlace(b.baseAddress!, ld: ld, rows: rows, cols: cols)
        }
        for r in 0..<rows { for c in 0..<cols { XCTAssertEqual(buf[r * ld + c], bf16ToFloat(want[r * ld + c])) } }
    }
}
