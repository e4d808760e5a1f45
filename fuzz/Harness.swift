// lora-fuzz: libFuzzer harnesses for every file a user hands the tools. LORA_FUZZ_TARGET picks one:
//   safetensors  a .safetensors file: header, offsets, every tensor read
//   json         the JSON parser and serializer
//   config       config.json → ModelConfig (both transformers forms)
//   adapter      adapter_config.json → LoRAConfig
//   tokenizer    tokenizer.json loading, then encode / decode of a fixed text
//   jinja        a chat template: lex, parse, render a fixed conversation
//   jsonl        a data file (JSONL, a JSON array, gzip) → examples (text, prompt/completion, instruction, messages, ShareGPT)
//   checkpoint   trainer_state.json → TrainerState and its range checks
//   gguf         a .gguf file (lora-inspect reads them): header, metadata, tensor infos, every small tensor decoded
// A thrown error is the expected outcome of bad input; a crash, hang or sanitizer report is a finding.
// fuzz/run.sh builds the seed corpora from the test fixtures and runs a target for N seconds.
import Foundation
import LoRAShared

nonisolated(unsafe) var target = ""
nonisolated(unsafe) var scratch = ""
nonisolated(unsafe) var dataTokenizer: Tokenizer?
nonisolated(unsafe) var builder: ExampleBuilder?
let conversation: [JSONValue] = [
    .object(JSONObject([("role", .string("system")), ("content", .string("Be brief."))])),
    .object(JSONObject([("role", .string("user")), ("content", .string("Hi there, 12 + 30?"))])),
    .object(JSONObject([("role", .string("assistant")), ("content", .string("42."))])),
    .object(JSONObject([("role", .string("user")), ("content", .string("Thanks!"))])),
]

@_cdecl("LLVMFuzzerInitialize")
public func initialize(_ argc: UnsafeMutablePointer<Int32>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>) -> Int32 {
    let env = ProcessInfo.processInfo.environment
    target = env["LORA_FUZZ_TARGET"] ?? ""
    scratch = (env["TMPDIR"] ?? "/tmp") + "/lora-fuzz-\(getpid()).bin"
    if target == "jsonl" {
        // The data harness tokenizes with a real tokenizer and chat template from the fixtures.
        let dir = env["LORA_FUZZ_TOKENIZER"] ?? "Tests/LoRASharedTests/Fixtures/tokenizer/qwen2"
        dataTokenizer = try! Tokenizer.load(directory: dir)
        builder = try! ExampleBuilder(tokenizer: dataTokenizer!, maskPrompt: nil, path: "fuzz.jsonl", maxTokens: 512)
    }
    guard ["safetensors", "json", "config", "adapter", "tokenizer", "jinja", "jsonl", "checkpoint", "gguf"].contains(target) else {
        FileHandle.standardError.write(Data("error: set LORA_FUZZ_TARGET to safetensors, json, config, adapter, tokenizer, jinja, jsonl, checkpoint or gguf\n".utf8))
        exit(64)
    }
    return 0
}

/// The input as a file (the readers map files).
func asFile(_ bytes: UnsafeRawBufferPointer) -> String {
    FileManager.default.createFile(atPath: scratch, contents: Data(bytes))
    return scratch
}

@_cdecl("LLVMFuzzerTestOneInput")
public func testOneInput(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let bytes = UnsafeRawBufferPointer(start: data, count: size)
    let text = String(decoding: bytes, as: UTF8.self)
    switch target {
    case "safetensors":
        if let f = try? SafetensorsFile(path: asFile(bytes)) {
            var sum: Float = 0
            for n in f.names {
                guard let t = try? f.tensor(n) else { continue }
                if t.dtype.isFloatingPoint && t.numel < 1 << 20 { sum += t.floats().reduce(0, +) }
            }
            if sum.isNaN { _ = 0 }
        }
    case "json":
        if let v = try? JSONParser().parse(bytes) { _ = v.serialized(); _ = v.serialized(.python) }
    case "config":
        if let c = try? ModelConfig.parse(Data(bytes), path: "config.json") { _ = c.linearModules() }
    case "adapter":
        if let c = try? LoRAConfig.parse(text, source: "adapter_config.json") { _ = c.scaling(for: "model.layers.0.self_attn.q_proj") }
    case "tokenizer":
        if let t = try? Tokenizer(tokenizerJSON: Data(bytes)) {
            if let ids = try? t.encodeChecked("Hello world! 123 héllo\n\tthe quick <|im_end|> fox") { _ = t.decode(ids, skipSpecialTokens: false) }
        }
    case "jinja":
        // A tenth of the work budget: the limits are still reached, and a render that spends it all stays far
        // inside libFuzzer's 10-s timeout under ASan and coverage (about 15× slower than a release build).
        if var t = try? ChatTemplate(text) {
            t.maxWork = TemplateLimits.maxWork / 10
            _ = try? t.render(messages: conversation, addGenerationPrompt: true, variables: ["bos_token": .string("<s>"), "eos_token": .string("</s>")])
        }
    case "jsonl":
        if let f = try? JSONLFile.read(asFile(bytes), skipBad: true) {
            for r in f.records {
                if let e = try? builder!.build(r) { _ = try? e.checkScored(seqLen: 512, path: "fuzz.jsonl") }
            }
        }
    case "checkpoint":
        if let s = try? JSONDecoder().decode(TrainerState.self, from: Data(bytes)) {
            _ = try? s.validate(path: "ck", totalSteps: 1000, batchesPerEpoch: 50, maxTokensPerStep: 4096)
        }
    case "gguf":
        if let f = try? GGUFFile(path: asFile(bytes)) {
            var sum: Float = 0
            for t in f.tensors where t.count < 1 << 20 { sum += f.floats(t).reduce(0, +) }
            _ = f["general.architecture"]?.string
            _ = f["tokenizer.ggml.tokens"]?.array?.count
            if sum.isNaN { _ = 0 }
        }
    default:
        break
    }
    return 0
}
