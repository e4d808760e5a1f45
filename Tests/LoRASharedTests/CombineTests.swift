// CombineTests: lora-merge --combination against PEFT's add_weighted_adapter (Fixtures/combine, made by
// scripts/gen_combine_fixtures.py): linear, cat, svd, ties, magnitude_prune and their svd forms exactly (the svd
// factors up to the sign of each singular pair); dare_* structurally (each value is one of the values the
// keep/drop choices allow, kept with probability density, rescaled by 1/density) and statistically (the mean over
// seeds tends to the linear result), since torch's bernoulli draws cannot be reproduced. Then the CLI: --as-adapter
// folders, merged models, and the bad inputs.
import Foundation
import XCTest
@testable import LoRAShared
@testable import LoRAModel
@testable import LoRAConvert

final class CombineTests: XCTestCase {
    var dir = ""
    override func setUp() { dir = makeTempDir("combine") }
    override func tearDown() { try? FileManager.default.removeItem(atPath: dir) }

    static let fix = Fixtures.path("combine")
    static let base = Fixtures.path("tiny-llama-fp32")

    struct Case {
        let name: String, adapters: [String], weights: [Double], type: CombinationType
        let svdRank: Int?, density: Double?, sign: MajoritySignMethod
        let r: Int, alpha: Double, rslora: Bool, targets: [String]
    }

    func cases() throws -> [Case] {
        let v = try jsonObject(try String(contentsOfFile: CombineTests.fix + "/cases.json", encoding: .utf8))
        return v["cases"]!.arrayValue!.map { c in
            Case(name: c["name"]!.stringValue!, adapters: c["adapters"]!.arrayValue!.map { $0.stringValue! },
                 weights: c["weights"]!.arrayValue!.map { $0.doubleValue! },
                 type: CombinationType(rawValue: c["combination_type"]!.stringValue!)!,
                 svdRank: c["svd_rank"]!.intValue.map { Int($0) }, density: c["density"]!.doubleValue,
                 sign: MajoritySignMethod(rawValue: c["majority_sign_method"]!.stringValue!)!,
                 r: Int(c["r"]!.intValue!), alpha: c["lora_alpha"]!.doubleValue!, rslora: c["use_rslora"]!.boolValue!,
                 targets: c["target_modules"]!.arrayValue!.map { $0.stringValue! })
        }
    }

    func combine(_ c: Case, seed: UInt64 = 0) throws -> CombineResult {
        let inputs = try zip(c.adapters, c.weights).map { MergeInput(adapter: try Adapter.load(CombineTests.fix + "/" + $0), weight: $1) }
        var o = CombineOptions(type: c.type)
        o.svdRank = c.svdRank
        o.density = c.density
        o.majoritySign = c.sign
        o.seed = seed
        return try AdapterCombiner.combine(inputs, options: o)
    }

    /// B·A of one module, [out, in], in Double.
    func product(_ w: LoRAWeights) -> [Double] {
        var p = [Double](repeating: 0, count: w.outFeatures * w.inFeatures)
        for o in 0..<w.outFeatures {
            for k in 0..<w.r {
                let b = Double(w.b[o * w.r + k])
                for i in 0..<w.inFeatures { p[o * w.inFeatures + i] += b * Double(w.a[k * w.inFeatures + i]) }
            }
        }
        return p
    }

    func checkConfig(_ ours: Adapter, _ c: Case, peft: Adapter) {
        XCTAssertEqual(ours.config.r, c.r, c.name)
        XCTAssertEqual(ours.config.alpha, c.alpha, c.name)
        XCTAssertEqual(ours.config.useRslora, c.rslora, c.name)
        XCTAssertEqual(ours.config.targets, .names(c.targets), c.name)
        XCTAssertEqual(ours.moduleNames, peft.moduleNames, c.name)
        XCTAssertEqual(ours.config.scaling(for: ours.moduleNames[0]), peft.config.scaling(for: peft.moduleNames[0]), c.name)
    }

    func testExactCombinationsMatchPEFT() throws {
        var report: [String] = []
        for c in try cases() where !c.type.rawValue.hasPrefix("dare") {
            let ours = try combine(c).adapter
            let peft = try Adapter.load(CombineTests.fix + "/" + c.name)
            checkConfig(ours, c, peft: peft)
            var worstA: Float = 0, worstB: Float = 0, worstProduct = 0.0
            for m in peft.moduleNames {
                let o = ours.modules[m]!, p = peft.modules[m]!
                XCTAssertEqual(o.r, p.r, "\(c.name) \(m)")
                let po = product(o), pp = product(p)
                let scale = pp.map(abs).max()!
                worstProduct = max(worstProduct, zip(po, pp).map { abs($0 - $1) }.max()! / scale)
                if c.type.isSVD {
                    // Each singular pair up to its sign (skipping the null space of a rank-deficient delta).
                    let colNorm = { (w: LoRAWeights, j: Int) in (0..<w.outFeatures).map { Double(w.b[$0 * w.r + j]) }.map { $0 * $0 }.reduce(0, +).squareRoot() }
                    let top = colNorm(p, 0)
                    for j in 0..<p.r where colNorm(p, j) > 1e-3 * top {
                        var dot: Float = 0
                        for i in 0..<p.inFeatures { dot += o.a[j * p.inFeatures + i] * p.a[j * p.inFeatures + i] }
                        let s: Float = dot >= 0 ? 1 : -1
                        for i in 0..<p.inFeatures { worstA = max(worstA, abs(s * o.a[j * p.inFeatures + i] - p.a[j * p.inFeatures + i])) }
                        for r in 0..<p.outFeatures { worstB = max(worstB, abs(s * o.b[r * p.r + j] - p.b[r * p.r + j])) }
                    }
                } else {
                    worstA = max(worstA, maxAbsDiff(o.a, p.a))
                    worstB = max(worstB, maxAbsDiff(o.b, p.b))
                }
            }
            report.append("\(c.name): max|ΔA| \(worstA), max|ΔB| \(worstB), max|Δ(B·A)|/max|B·A| \(worstProduct)")
            let tol: Float = c.type.isSVD ? 2e-4 : 1e-6
            XCTAssertLessThan(worstA, tol, c.name)
            XCTAssertLessThan(worstB, tol, c.name)
            XCTAssertLessThan(worstProduct, c.type.isSVD ? 1e-5 : 1e-6, c.name)
        }
        print("combination parity vs PEFT:\n  " + report.joined(separator: "\n  "))
    }

    /// Every value one of the values that some keep/drop choice for each adapter gives (the rule applied to the
    /// kept values rescaled by 1/density), and the share of values that needed a drop.
    func dareStructure(_ result: [Float], tensors: [[Float]], weights: [Float], rule: CombinationType.Rule, density: Double,
                       sign: MajoritySignMethod) throws -> (worst: Float, kept: Double) {
        var worst: Float = 0, keptCount = 0, total = 0
        var o = CombineOptions(type: .linear)
        o.majoritySign = sign
        var rng = Xoshiro256(seed: 0)
        for j in result.indices {
            var best = Float.infinity, bestKept = 0
            for mask in 0..<(1 << tensors.count) {
                let t = tensors.indices.map { i -> [Float] in [(tensors[i][j] * (mask >> i & 1 == 1 ? 1 : 0)) / Float(density)] }
                let v = try AdapterCombiner.apply(rule == .dareTies ? .ties : .linear, t, weights: weights, options: o, rng: &rng)[0]
                let d = abs(v - result[j])
                if d < best { best = d; bestKept = mask.nonzeroBitCount }
            }
            worst = max(worst, best / max(1, abs(result[j])))
            keptCount += bestKept
            total += tensors.count
        }
        return (worst, Double(keptCount) / Double(total))
    }

    func testDareStructureAndStatistics() throws {
        for c in try cases() where c.type == .dare_linear || c.type == .dare_ties {
            let inputs = try zip(c.adapters, c.weights).map { MergeInput(adapter: try Adapter.load(CombineTests.fix + "/" + $0), weight: $1) }
            let peft = try Adapter.load(CombineTests.fix + "/" + c.name)
            let ours = try combine(c, seed: 7).adapter
            checkConfig(ours, c, peft: peft)
            let m = "model.layers.1.self_attn.q_proj"
            let wA = inputs.map { i -> Float in
                let ws = i.weight * i.adapter.config.scaling(for: m)
                return Float(ws >= 0 ? abs(ws).squareRoot() : -abs(ws).squareRoot())
            }
            let rule: CombinationType.Rule = c.type == .dare_ties ? .dareTies : .dareLinear
            // The same structure holds for PEFT's result and ours, with about density of the values kept.
            for (who, a) in [("peft", peft.modules[m]!.a), ("ours", ours.modules[m]!.a)] {
                let s = try dareStructure(a, tensors: inputs.map { $0.adapter.modules[m]!.a }, weights: wA, rule: rule,
                                          density: c.density!, sign: c.sign)
                print("\(c.name) \(who): worst relative distance to an allowed value \(s.worst), kept share \(s.kept)")
                XCTAssertLessThan(s.worst, 1e-6, "\(c.name) \(who)")
                // (dare_ties: a value of the losing sign is the same kept or dropped, so only dare_linear counts.)
                if c.type == .dare_linear { XCTAssertEqual(s.kept, c.density!, accuracy: 0.1, "\(c.name) \(who)") }
            }
            // Seeded: the same seed gives the same bytes, another seed other values.
            XCTAssertEqual(try combine(c, seed: 7).adapter.modules[m]!.a, ours.modules[m]!.a)
            XCTAssertNotEqual(try combine(c, seed: 8).adapter.modules[m]!.a, ours.modules[m]!.a)
        }
        // dare_linear is unbiased: its mean over seeds tends to linear's A (rescaled by 1/density).
        let c = try cases().first { $0.type == .dare_linear }!
        let lin = try combine(Case(name: "linear", adapters: c.adapters, weights: c.weights, type: .linear, svdRank: nil,
                                   density: nil, sign: .total, r: c.r, alpha: c.alpha, rslora: c.rslora, targets: c.targets)).adapter
        let m = "model.layers.0.self_attn.q_proj"
        let seeds = 400
        var mean = [Double](repeating: 0, count: lin.modules[m]!.a.count)
        for s in 0..<seeds {
            let a = try combine(c, seed: UInt64(s)).adapter.modules[m]!.a
            for i in mean.indices { mean[i] += Double(a[i]) / Double(seeds) }
        }
        let ref = lin.modules[m]!.a.map(Double.init)
        let err = zip(mean, ref).map { abs($0 - $1) }.max()!, scale = ref.map(abs).max()!
        print("dare_linear: mean of \(seeds) seeds vs linear: max abs \(err) (max |A| \(scale))")
        XCTAssertLessThan(err / scale, 0.15)
    }

    func testDareSVDKinds() throws {
        for c in try cases() where c.type == .dare_linear_svd || c.type == .dare_ties_svd {
            let peft = try Adapter.load(CombineTests.fix + "/" + c.name)
            let ours = try combine(c, seed: 3).adapter
            checkConfig(ours, c, peft: peft)
            // Both are rank-r approximations of a randomly pruned delta: their products are about as far from the
            // unpruned combination's.
            let svd = try combine(Case(name: "svd", adapters: c.adapters, weights: c.weights, type: .svd, svdRank: c.r,
                                       density: nil, sign: .total, r: c.r, alpha: c.alpha, rslora: c.rslora, targets: c.targets)).adapter
            let m = "model.layers.0.self_attn.q_proj"
            let ref = product(svd.modules[m]!)
            func dist(_ w: LoRAWeights) -> Double { zip(product(w), ref).map { ($0 - $1) * ($0 - $1) }.reduce(0, +).squareRoot() }
            let dp = dist(peft.modules[m]!), dOurs = dist(ours.modules[m]!)
            print("\(c.name): distance of B·A to the unpruned svd combination: peft \(dp), ours \(dOurs)")
            XCTAssertLessThan(dOurs, 2 * dp, c.name)
            XCTAssertGreaterThan(dOurs, 0.5 * dp, c.name)
        }
    }

    func testCLIAsAdapterAndMerged() throws {
        let a1 = CombineTests.fix + "/a1", a2 = CombineTests.fix + "/a2", a3 = CombineTests.fix + "/a3"
        // ties as a PEFT adapter folder: the same tensors as PEFT's.
        let r = try runTool("lora-merge", [CombineTests.base, "--adapter", a1 + ":0.7", "--adapter", a2 + ":0.4",
                                           "--combination", "ties", "--density", "0.5", "--as-adapter", dir + "/ties"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let s = try jsonObject(r.stdout)
        XCTAssertEqual(s["combination"], .string("ties"))
        XCTAssertEqual(s["r"], .int(4))
        let got = try Adapter.load(dir + "/ties"), peft = try Adapter.load(CombineTests.fix + "/ties")
        XCTAssertEqual(got.moduleNames, peft.moduleNames)
        for m in peft.moduleNames {
            XCTAssertLessThan(maxAbsDiff(got.modules[m]!.a, peft.modules[m]!.a), 1e-6, m)
            XCTAssertLessThan(maxAbsDiff(got.modules[m]!.b, peft.modules[m]!.b), 1e-6, m)
        }
        let cfg = try jsonObject(try String(contentsOfFile: dir + "/ties/adapter_config.json", encoding: .utf8))
        XCTAssertEqual(cfg["r"], .int(4))
        XCTAssertEqual(cfg["lora_alpha"], .int(4))
        XCTAssertEqual(cfg["target_modules"], .array([.string("k_proj"), .string("q_proj"), .string("v_proj")]))
        XCTAssertEqual(cfg["peft_type"], .string("LORA"))
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasPrefix(".") }, [])

        // cat is exact: merged with -o it equals today's merge (the weighted sum of the deltas) to rounding.
        let cat = try runTool("lora-merge", [CombineTests.base, "--adapter", a1 + ":0.7", "--adapter", a3 + ":-0.4",
                                             "--combination", "cat", "-o", dir + "/cat", "--as-adapter", dir + "/cat-adapter"])
        XCTAssertEqual(cat.status, 0, cat.stderr)
        XCTAssertEqual(try jsonObject(cat.stdout)["r"], .int(12))
        let plain = try runTool("lora-merge", [CombineTests.base, "--adapter", a1 + ":0.7", "--adapter", a3 + ":-0.4", "-o", dir + "/plain"])
        XCTAssertEqual(plain.status, 0, plain.stderr)
        let mc = try ModelDir(path: dir + "/cat"), mp = try ModelDir(path: dir + "/plain")
        var worst: Float = 0
        for n in mp.weights.names { worst = max(worst, maxAbsDiff(try mc.weights.tensor(n).floats(), try mp.weights.tensor(n).floats())) }
        print("cat merged vs the default merge: max abs \(worst)")
        XCTAssertLessThan(worst, 1e-6)
        XCTAssertTrue(FileManager.default.fileExists(atPath: dir + "/cat-adapter/adapter_model.safetensors"))

        // svd as an adapter, then merged by the default path, equals merging with --combination svd directly.
        XCTAssertEqual(try runTool("lora-merge", [CombineTests.base, "--adapter", a1 + ":0.7", "--adapter", a3 + ":-0.4",
                                                  "--combination", "svd", "--svd-rank", "5", "--as-adapter", dir + "/svd", "-o", dir + "/svd-m"]).status, 0)
        XCTAssertEqual(try Adapter.load(dir + "/svd").config.r, 5)
        let again = try runTool("lora-merge", [CombineTests.base, "--adapter", dir + "/svd", "-o", dir + "/svd-m2"])
        XCTAssertEqual(again.status, 0, again.stderr)
        XCTAssertEqual(FileManager.default.contents(atPath: dir + "/svd-m/model.safetensors"),
                       FileManager.default.contents(atPath: dir + "/svd-m2/model.safetensors"))

        // dare with --seed: the same bytes twice.
        for out in ["d1", "d2"] {
            XCTAssertEqual(try runTool("lora-merge", [CombineTests.base, "--adapter", a1, "--adapter", a2, "--combination", "dare_ties",
                                                      "--density", "0.3", "--majority-sign-method", "frequency", "--seed", "5",
                                                      "--as-adapter", dir + "/" + out]).status, 0)
        }
        XCTAssertEqual(FileManager.default.contents(atPath: dir + "/d1/adapter_model.safetensors"),
                       FileManager.default.contents(atPath: dir + "/d2/adapter_model.safetensors"))
    }

    func testBadInput() throws {
        let a1 = CombineTests.fix + "/a1", a2 = CombineTests.fix + "/a2", a3 = CombineTests.fix + "/a3"
        let base = CombineTests.base
        // Ranks 4 and 8 cannot be combined by ties: the message names both adapters, their ranks, and what works.
        for t in ["linear", "ties", "dare_linear", "dare_ties", "magnitude_prune"] {
            let r = try runTool("lora-merge", [base, "--adapter", a1, "--adapter", a3, "--combination", t, "--density", "0.5", "--as-adapter", dir + "/x"])
            assertToolError(r, contains: "\(a1) has r=4, \(a3) has r=8")
            XCTAssertTrue(r.stderr.contains("cat, svd"), r.stderr)
        }
        assertToolError(try runTool("lora-merge", [base, "--adapter", a1, "--adapter", a2, "--combination", "ties", "--as-adapter", dir + "/x"]),
                        contains: "--density")
        for d in ["0", "-0.5", "1.5", "nan"] {
            assertToolError(try runTool("lora-merge", [base, "--adapter", a1, "--adapter", a2, "--combination", "dare_linear", "--density=" + d,
                                                       "--as-adapter", dir + "/x"]), contains: "--density")
        }
        assertToolError(try runTool("lora-merge", [base, "--adapter", a1, "--adapter", a3, "--combination", "svd", "--svd-rank", "40",
                                                   "--as-adapter", dir + "/x"]), contains: "--svd-rank 40")
        assertToolError(try runTool("lora-merge", [base, "--adapter", a1, "--adapter", a3, "--combination", "svd", "--svd-rank", "0",
                                                   "--as-adapter", dir + "/x"]), contains: "--svd-rank")
        assertToolError(try runTool("lora-merge", [base, "--adapter", a1, "--as-adapter", dir + "/x"]), contains: "--combination", code: 64)
        assertToolError(try runTool("lora-merge", [base, "--adapter", a1, "--density", "0.5", "-o", dir + "/x"]), contains: "--combination", code: 64)
        assertToolError(try runTool("lora-merge", [base, "--adapter", a1, "--combination", "cat"]), contains: "--as-adapter", code: 64)
        assertToolError(try runTool("lora-merge", [base, "--adapter", a1, "--adapter", a2, "--combination", "average", "-o", dir + "/x"]),
                        contains: "average", code: 64)
        // An existing output is kept unless --force; nothing is left behind by a refused run.
        XCTAssertEqual(try runTool("lora-merge", [base, "--adapter", a1, "--adapter", a2, "--combination", "cat", "--as-adapter", dir + "/x"]).status, 0)
        assertToolError(try runTool("lora-merge", [base, "--adapter", a1, "--adapter", a2, "--combination", "cat", "--as-adapter", dir + "/x"]),
                        contains: "--force")
        XCTAssertEqual(try runTool("lora-merge", [base, "--adapter", a1, "--adapter", a2, "--combination", "cat", "--as-adapter", dir + "/x",
                                                  "--force"]).status, 0)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir).sorted(), ["x"])
    }
}
