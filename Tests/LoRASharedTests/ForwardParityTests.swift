// ForwardParityTests: the fp32 forward pass against transformers (+ PEFT, + bitsandbytes) on tiny random models
// (Fixtures/forward, scripts/gen_model_fixtures.py): logits at every position and the loss, base and with a
// non-zero LoRA adapter, for GQA/tied Llama, Qwen2 biases, llama3 and linear RoPE scaling, NF4 and bf16 bases.
import XCTest
@testable import LoRAShared
@testable import LoRAModel
@testable import LoRAEngine
@testable import LoRATrain
@testable import LoRATokenizer

final class ForwardParityTests: XCTestCase {
    /// fp32 with different summation orders than torch: logits agree to ~1e-6; 1e-4 is the issue's bound.
    static let logitTolerance: Float = 1e-4
    static let lossTolerance = 1e-5

    func load(_ name: String) throws -> (Transformer, ModelDir, TokenBatch, SafetensorsFile, String) {
        let dir = Fixtures.path("forward/" + name)
        let model = try ModelDir(path: dir + "/model")
        let io = try SafetensorsFile(path: dir + "/io.safetensors")
        let ids = try io.tensor("input_ids"), mask = try io.tensor("attention_mask"), labels = try io.tensor("labels")
        let B = ids.shape[0], T = ids.shape[1]
        func ints(_ t: TensorView) -> [Int32] { t.data.bindMemory(to: Int64.self).map { Int32($0) } }
        let m = ints(mask)
        let lengths = (0..<B).map { b in (0..<T).reduce(0) { $0 + Int(m[b * T + $1]) } }
        let batch = TokenBatch(tokens: ints(ids), labels: ints(labels), lengths: lengths, batch: B, seq: T)
        return (try Transformer(model: model), model, batch, io, dir)
    }

    func check(_ name: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let (tr, model, batch, io, dir) = try load(name)
        for (withLoRA, key, lossKey) in [(false, "logits_base", "loss_base"), (true, "logits_lora", "loss_lora")] {
            if withLoRA {
                try tr.attach(try Adapter.load(dir + "/adapter"), linears: try model.linearModules())
            } else {
                tr.detach()
            }
            let out = try tr.forward(batch, wantLogits: true)
            let ref = try io.tensor(key).floats()
            XCTAssertEqual(out.logits!.count, ref.count, file: file, line: line)
            let diff = maxAbsDiff(out.logits!, ref)
            XCTAssertLessThan(diff, ForwardParityTests.logitTolerance, "\(name) \(key): max |Δlogit| = \(diff)", file: file, line: line)
            let loss = out.nllSum / Double(out.tokens)
            let refLoss = Double(try io.tensor(lossKey).floats()[0])
            XCTAssertEqual(loss, refLoss, accuracy: ForwardParityTests.lossTolerance, "\(name) \(lossKey)", file: file, line: line)
            print("forward parity \(name) \(withLoRA ? "lora" : "base"): max |Δlogit| \(diff), loss \(loss) vs \(refLoss)")
        }
    }

    func testLlamaGQATied() throws { try check("llama-gqa-tied") }
    func testRsloraAndPatterns() throws { try check("llama-rslora-patterns") }
    func testQwen2Biases() throws { try check("qwen2-bias") }
    func testLlama3RopeScaling() throws { try check("llama3-rope") }
    func testLinearRopeScaling() throws { try check("llama-linear-rope") }
    func testNF4Base() throws { try check("llama-nf4") }
    func testBF16Weights() throws { try check("llama-bf16-weights") }

    func testZeroBAdapterLeavesBaseUnchanged() throws {
        let (tr, model, batch, _, _) = try load("llama-gqa-tied")
        let base = try tr.forward(batch, wantLogits: true).logits!
        let cfg = LoRAConfig(r: 4, alpha: 8, dropout: 0, targets: .allLinear)
        try tr.attach(try Adapter.initialize(config: cfg, model: model, initMode: .kaiming, seed: 9), linears: try model.linearModules())
        XCTAssertEqual(try tr.forward(batch, wantLogits: true).logits!, base, "B = 0 must give exactly the base model")
    }

    func testAdapterForAnotherModelIsRefusedWithEveryMismatch() throws {
        // The tiny Llama's all-linear adapter on the llama3-rope model (MLP width 64, not 128): every MLP module
        // of both layers is reported in one message.
        let (tr, model, _, _, _) = try load("llama3-rope")
        let foreign = try Adapter.load(Fixtures.path("forward/llama-gqa-tied/adapter"))
        assertThrows(try tr.attach(foreign, linears: try model.linearModules()), contains: "(6 problems)")
        assertThrows(try tr.attach(foreign, linears: try model.linearModules()), contains: "model.layers.1.mlp.down_proj: adapter is [64×128], model is [64×64]")
    }
}
