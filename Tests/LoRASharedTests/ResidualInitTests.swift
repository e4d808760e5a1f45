// ResidualInitTests: lora-init --init pissa / pissa_niter_N / olora against PEFT's get_peft_model with
// init_lora_weights "pissa" / "olora" (Fixtures/init/<case>, scripts/gen_init_fixtures.py): A and B (each
// singular pair up to its sign), B·A, the residual weights (float32, and bfloat16 rounded once), the adapter
// config; base + adapter = the original model; the randomized SVD against the exact one; Linalg's QR; and the
// refusals.
import Foundation
import XCTest
@testable import LoRAShared
@testable import LoRAModel
@testable import LoRAEngine
@testable import LoRAFormats

final class ResidualInitTests: XCTestCase {
    var dir = ""
    override func setUp() { dir = makeTempDir("init") }
    override func tearDown() { try? FileManager.default.removeItem(atPath: dir) }

    struct Case {
        let name, model, method: String
        let args: [String]
    }
    static let cases = [
        Case(name: "pissa-f32", model: "forward/llama-gqa-tied/model", method: "pissa",
             args: ["--rank", "4", "--alpha", "8", "--targets", "q_proj,v_proj,down_proj"]),
        Case(name: "olora-f32", model: "forward/llama-gqa-tied/model", method: "olora",
             args: ["--rank", "4", "--alpha", "8", "--targets", "k_proj,o_proj,gate_proj"]),
    ]

    /// Runs lora-init for a case; returns the adapter and the residual model.
    func initialize(_ c: Case, _ extra: [String] = []) throws -> (Adapter, ModelDir) {
        let r = try runTool("lora-init", [Fixtures.path(c.model), "-o", dir + "/\(c.name)", "--init", c.method,
                                          "--residual-model", dir + "/\(c.name)-res", "-q"] + c.args + extra)
        XCTAssertEqual(r.status, 0, r.stderr)
        return (try Adapter.load(dir + "/\(c.name)"), try ModelDir(path: dir + "/\(c.name)-res"))
    }

    /// Ours against PEFT's: each rank's (A row, B column) pair after flipping both to PEFT's sign, B·A, and the residual.
    func compare(_ name: String, ours: Adapter, residual: ModelDir, sourceModel: String, bf16: Bool = false,
                 file: StaticString = #filePath, line: UInt = #line) throws {
        let ref = try Adapter.load(Fixtures.path("init/\(name)/adapter"))
        XCTAssertEqual(ours.moduleNames.sorted(), ref.moduleNames.sorted(), file: file, line: line)
        XCTAssertEqual(ours.config.initLoraWeights, .bool(true), file: file, line: line)
        XCTAssertEqual(ours.config.useRslora, ref.config.useRslora, file: file, line: line)
        var worstFactor: Float = 0, worstProduct: Float = 0
        for m in ref.moduleNames {
            let a = ours.modules[m]!, b = ref.modules[m]!
            XCTAssertEqual(a.r, b.r, m, file: file, line: line)
            let scaleA = b.a.map(abs).max()!, scaleB = b.b.map(abs).max()!
            for j in 0..<b.r {
                let rowA = Array(a.a[(j * a.inFeatures)..<((j + 1) * a.inFeatures)]), refA = Array(b.a[(j * b.inFeatures)..<((j + 1) * b.inFeatures)])
                let dot = zip(rowA, refA).reduce(Float(0)) { $0 + $1.0 * $1.1 }
                let sign: Float = dot < 0 ? -1 : 1
                worstFactor = max(worstFactor, maxAbsDiff(rowA.map { $0 * sign }, refA) / scaleA)
                let colB = (0..<a.outFeatures).map { a.b[$0 * a.r + j] * sign }, refB = (0..<b.outFeatures).map { b.b[$0 * b.r + j] }
                worstFactor = max(worstFactor, maxAbsDiff(colB, refB) / scaleB)
            }
            func product(_ w: LoRAWeights) -> [Float] {
                var p = [Float](repeating: 0, count: w.outFeatures * w.inFeatures)
                gemmNaive(.none, .none, m: w.outFeatures, n: w.inFeatures, k: w.r, a: w.b, lda: w.r, b: w.a, ldb: w.inFeatures, c: &p, ldc: w.inFeatures)
                return p
            }
            let pr = product(b)
            worstProduct = max(worstProduct, maxAbsDiff(product(a), pr) / pr.map(abs).max()!)
        }
        XCTAssertLessThan(worstFactor, bf16 ? 8e-3 : 1e-3, "\(name): A/B differ from PEFT's beyond float32 SVD/QR noise", file: file, line: line)
        XCTAssertLessThan(worstProduct, bf16 ? 8e-3 : 1e-4, "\(name): B·A differs from PEFT's", file: file, line: line)
        // The residual weights; every other tensor byte for byte.
        let want = try SafetensorsFile(path: Fixtures.path("init/\(name)/residual.safetensors"))
        let src = try ModelDir(path: Fixtures.path(sourceModel))
        var worstResidual: Float = 0, ulpMismatches = 0, values = 0
        for n in residual.weights.names {
            let got = try residual.weights.tensor(n)
            if want.names.contains(n) {
                let w = try want.tensor(n)
                XCTAssertEqual(got.dtype, w.dtype, n, file: file, line: line)
                let g = got.floats(), r = w.floats()
                values += g.count
                if bf16 {
                    // Rounded once from float32: a value near a rounding boundary may land one bf16 step away.
                    let big = r.map(abs).max()!
                    for (x, y) in zip(g, r) where x != y {
                        ulpMismatches += 1
                        XCTAssertLessThanOrEqual(abs(x - y), max(abs(y) / 64, 1e-5 * big), "\(n): \(x) vs \(y)", file: file, line: line)
                    }
                } else {
                    worstResidual = max(worstResidual, maxAbsDiff(g, r) / r.map(abs).max()!)
                }
            } else {
                let s = try src.weights.tensor(n)
                XCTAssertEqual(Data(buffer: UnsafeBufferPointer(start: got.data.baseAddress!.assumingMemoryBound(to: UInt8.self), count: got.data.count)),
                               Data(buffer: UnsafeBufferPointer(start: s.data.baseAddress!.assumingMemoryBound(to: UInt8.self), count: s.data.count)),
                               "\(n) is not copied byte for byte", file: file, line: line)
            }
        }
        XCTAssertEqual(Set(want.names).subtracting(residual.weights.names), [], file: file, line: line)
        XCTAssertLessThan(worstResidual, 5e-5, "\(name): residual differs from PEFT's", file: file, line: line)
        XCTAssertLessThan(Double(ulpMismatches), 0.01 * Double(values), "\(name): too many bf16 rounding differences", file: file, line: line)
        print("residual init \(name): factors \(worstFactor), B·A \(worstProduct), residual \(worstResidual), bf16 one-step differences \(ulpMismatches) of \(values)")
    }

    func testPiSSAMatchesPEFT() throws {
        let c = ResidualInitTests.cases[0]
        let (a, res) = try initialize(c)
        try compare(c.name, ours: a, residual: res, sourceModel: c.model)
    }

    func testOLoRAMatchesPEFT() throws {
        let c = ResidualInitTests.cases[1]
        let (a, res) = try initialize(c)
        try compare(c.name, ours: a, residual: res, sourceModel: c.model)
        // Householder QR has no sign freedom: A = R[:r] and B = Q[:, :r] as torch.linalg.qr gives them.
        let ref = try Adapter.load(Fixtures.path("init/olora-f32/adapter"))
        for m in ref.moduleNames {
            XCTAssertLessThan(maxAbsDiff(a.modules[m]!.a, ref.modules[m]!.a), 1e-5, m)
            XCTAssertLessThan(maxAbsDiff(a.modules[m]!.b, ref.modules[m]!.b), 1e-5, m)
        }
    }

    /// LoftQ against PEFT's loftq_init steps (with bitsandbytes' NF4): Q bit for bit, B·A and the factors; then
    /// the QLoRA route — lora-quantize --no-double-quant of the residual model has exactly Q as its weights, and
    /// the 4-bit model with the adapter is closer to the original model than the 4-bit model alone.
    func testLoftQMatchesPEFT() throws {
        for (name, targets, extra) in [("loftq-f32", "q_proj,v_proj,down_proj", [String]()), ("loftq-iter3", "o_proj,up_proj", ["--init", "loftq_iter_3"])] {
            let c = Case(name: name, model: "forward/llama-gqa-tied/model", method: "loftq",
                         args: ["--rank", "4", "--alpha", "4", "--targets", targets] + extra)
            let (a, res) = try initialize(c)
            try compare(name, ours: a, residual: res, sourceModel: c.model)
            // One round quantizes W itself: Q is bnb's NF4, bit for bit. Later rounds quantize W − B·A, whose float32
            // sum (ours against torch.mm) moves a block's absmax by an ulp, so its values differ by ~1e-7 (compare()
            // bounds that); no code changes.
            let want = try SafetensorsFile(path: Fixtures.path("init/\(name)/residual.safetensors"))
            var differ = 0, total = 0
            for n in want.names {
                let g = try res.weights.tensor(n).floats(), w = try want.tensor(n).floats()
                differ += zip(g, w).filter { $0 != $1 }.count
                total += w.count
            }
            if name == "loftq-f32" { XCTAssertEqual(differ, 0, "\(name): \(differ) of \(total) values of Q are not bnb's NF4") }
            print("loftq \(name): \(differ) of \(total) quantized values differ from PEFT + bitsandbytes")
        }
        let q = try runTool("lora-quantize", [dir + "/loftq-f32-res", "-o", dir + "/nf4", "--no-double-quant", "-q"])
        XCTAssertEqual(q.status, 0, q.stderr)
        let nf4 = try ModelDir(path: dir + "/nf4"), res = try ModelDir(path: dir + "/loftq-f32-res")
        for l in try nf4.linearModules() where ["q_proj", "v_proj", "down_proj"].contains(l.shortName) {
            let w = try LinearWeight(name: l.name, store: nf4.weights, out: l.outFeatures, in: l.inFeatures, hasBias: false)
            var d = [Float](repeating: 0, count: w.numel)
            d.withUnsafeMutableBufferPointer { w.expand(into: $0.baseAddress!) }
            XCTAssertTrue(d == (try res.weights.tensor(l.name + ".weight").floats()), "\(l.name): the 4-bit weight is not Q")
        }
        let (tr0, _, batch, _) = try loadForwardCase("llama-gqa-tied")
        tr0.detach()
        let original = try tr0.forward(batch, wantLogits: true).logits!
        let tr = try Transformer(model: nf4)
        let alone = try tr.forward(batch, wantLogits: true).logits!
        try tr.attach(try Adapter.load(dir + "/loftq-f32"), linears: try nf4.linearModules())
        let fitted = try tr.forward(batch, wantLogits: true).logits!
        XCTAssertLessThan(maxAbsDiff(fitted, original), maxAbsDiff(alone, original), "LoftQ's adapter does not reduce the quantization error")
        print("loftq: max |Δlogit| to the original model: NF4 alone \(maxAbsDiff(alone, original)), NF4 + adapter \(maxAbsDiff(fitted, original))")
    }

    /// A bf16 model, rsLoRA scaling and a rank pattern (through the library: lora-init has no rank-pattern flag):
    /// the residual is rounded to bf16 once, as PEFT's weight.to(dtype) does.
    func testPiSSAOnBF16WithRsLoRAAndRankPattern() throws {
        var lc = LoRAConfig(r: 4, alpha: 16, dropout: 0, targets: .names(["q_proj", "o_proj", "up_proj"]), useRslora: true)
        lc.rankPattern = [("o_proj", 2)]
        let source = "forward/llama-bf16-weights/model"
        let m = try ModelDir(path: Fixtures.path(source))
        let a = try ResidualInit.adapter(config: lc, model: m, method: .pissa, seed: 0)
        _ = try ResidualInit.writeResidual(model: m, adapter: a, output: dir + "/res", replace: false)
        try ResidualInit.roundToBaseDType(a, model: m)
        for w in a.modules.values { XCTAssertTrue(w.a.allSatisfy { bf16ToFloat(floatToBF16($0)) == $0 }, "A rounded to bf16 as PEFT keeps it") }
        try compare("pissa-bf16-rslora", ours: a, residual: try ModelDir(path: dir + "/res"), sourceModel: source, bf16: true)
        XCTAssertEqual(a.modules["model.layers.0.self_attn.o_proj"]?.r, 2)
    }

    /// The residual model with the adapter computes the original model (float32: up to rounding).
    func testResidualPlusAdapterIsTheOriginalModel() throws {
        let (tr0, _, batch, _) = try loadForwardCase("llama-gqa-tied")
        tr0.detach()
        let original = try tr0.forward(batch, wantLogits: true).logits!
        for method in ["pissa", "pissa_niter_2", "olora"] {
            let c = Case(name: method, model: "forward/llama-gqa-tied/model", method: method,
                         args: ["--rank", "8", "--targets", "all-linear", "--seed", "5"])
            let (a, res) = try initialize(c)
            let tr = try Transformer(model: res)
            try tr.attach(a, linears: try res.linearModules())
            let got = try tr.forward(batch, wantLogits: true).logits!
            XCTAssertLessThan(maxAbsDiff(got, original), 1e-4, "\(method): residual + adapter differs from the original model")
            tr.detach()
            let without = try tr.forward(batch, wantLogits: true).logits!
            XCTAssertGreaterThan(maxAbsDiff(without, original), 1e-3, "\(method): the residual model equals the original (nothing moved)")
            // lora-merge of the adapter back onto the residual restores the original weights.
            let m = try runTool("lora-merge", [dir + "/\(method)-res", "--adapter", dir + "/\(method)", "-o", dir + "/\(method)-back", "-q"])
            XCTAssertEqual(m.status, 0, m.stderr)
            let back = try ModelDir(path: dir + "/\(method)-back"), src = try ModelDir(path: Fixtures.path(c.model))
            for l in try src.linearModules() {
                XCTAssertLessThan(maxAbsDiff(try back.weights.tensor(l.name + ".weight").floats(), try src.weights.tensor(l.name + ".weight").floats()), 1e-6, l.name)
            }
        }
    }

    /// torch.svd_lowrank's algorithm: on a matrix of rank r plus small noise, the randomized SVD finds the top
    /// singular values and the same rank-r product as the exact SVD; niter 0 works too.
    func testRandomizedSVDFindsTheLeadingSubspace() throws {
        var rng = Xoshiro256(seed: 9)
        let m = 40, n = 24, r = 4
        let u = (0..<(m * r)).map { _ in Double(rng.normal()) }, v = (0..<(r * n)).map { _ in Double(rng.normal()) }
        var a = Linalg.matmul(u, v, m: m, n: n, k: r)
        for i in a.indices { a[i] += 1e-6 * Double(rng.normal()) }
        let exact = try Linalg.svd(a, rows: m, cols: n)
        for (rows, cols, mat) in [(m, n, a), (n, m, (0..<(n * m)).map { a[($0 % m) * n + $0 / m] })] {
            for niter in [0, 2] {
                var g = Xoshiro256(seed: 3)
                let f = try Linalg.svdLowRank(mat, rows: rows, cols: cols, q: r, niter: niter, rng: &g)
                for j in 0..<r { XCTAssertEqual(f.s[j], exact.s[j], accuracy: 1e-5 * exact.s[0], "σ\(j), niter \(niter), \(rows)×\(cols)") }
                // The rank-r product U·S·Vᵀ equals the matrix up to the noise.
                var us = f.u
                for i in 0..<rows { for j in 0..<r { us[i * r + j] *= f.s[j] } }
                let p = Linalg.matmul(us, f.vt, m: rows, n: cols, k: r)
                XCTAssertLessThan(zip(p, mat).map { abs($0 - $1) }.max()!, 1e-4, "niter \(niter), \(rows)×\(cols)")
            }
        }
    }

    func testQRIsHouseholder() throws {
        var rng = Xoshiro256(seed: 4)
        for (m, n) in [(7, 4), (4, 7), (5, 5)] {
            let a = (0..<(m * n)).map { _ in Double(rng.normal()) }
            let (q, r) = try Linalg.qr(a, rows: m, cols: n)
            let k = min(m, n)
            let back = Linalg.matmul(q, r, m: m, n: n, k: k)
            XCTAssertLessThan(zip(back, a).map { abs($0 - $1) }.max()!, 1e-12)
            let qtq = Linalg.matmul(q, q, m: k, n: k, k: m, transA: true)
            for i in 0..<k { for j in 0..<k { XCTAssertEqual(qtq[i * k + j], i == j ? 1 : 0, accuracy: 1e-12) } }
            for i in 0..<k { for j in 0..<min(i, n) { XCTAssertEqual(r[i * n + j], 0) } }
        }
    }

    func testRefusals() throws {
        let model = Fixtures.path("forward/llama-gqa-tied/model")
        assertToolError(try runTool("lora-init", [model, "-o", dir + "/a", "--init", "pissa"]), contains: "--residual-model", code: 64)
        assertToolError(try runTool("lora-init", [model, "-o", "-", "--init", "olora", "--residual-model", dir + "/r"]), contains: "not '-'", code: 64)
        assertToolError(try runTool("lora-init", [model, "-o", dir + "/a", "--residual-model", dir + "/r"]), contains: "leaves the base unchanged", code: 64)
        assertToolError(try runTool("lora-init", [model, "-o", dir + "/a", "--init", "pissa_niter_x", "--residual-model", dir + "/r"]),
                        contains: "pissa_niter_N", code: 64)
        assertToolError(try runTool("lora-init", [model, "-o", dir + "/a", "--init", "pissa", "--residual-model", model]), contains: "the model itself", code: 64)
        assertToolError(try runTool("lora-init", [Fixtures.path("tiny-llama-bnb"), "-o", dir + "/a", "--init", "pissa", "--residual-model", dir + "/r"]),
                        contains: "is 4-bit")
        // An existing output is refused before anything is written.
        try FileManager.default.createDirectory(atPath: dir + "/taken", withIntermediateDirectories: true)
        assertToolError(try runTool("lora-init", [model, "-o", dir + "/a", "--init", "pissa", "--residual-model", dir + "/taken"]), contains: "already exists")
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/a"))
    }
}
