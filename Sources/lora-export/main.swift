// lora-export: a model dir (or a LoRA adapter on it) as a GGUF file for llama.cpp and Ollama, laid out as llama.cpp's
// convert_hf_to_gguf.py / convert_lora_to_gguf.py write it; with --ollama, a Modelfile beside it. Prints one JSON
// summary on stdout.
import ArgumentParser
import Foundation
import LoRACLI
import LoRAShared

extension GGMLType: ExpressibleByArgument {
    public init?(argument: String) {
        switch argument.lowercased() {
        case "f32": self = .f32
        case "f16": self = .f16
        case "bf16": self = .bf16
        case "q8_0", "q8": self = .q8_0
        default: return nil
        }
    }
    public static var allValueStrings: [String] { ["f32", "f16", "bf16", "q8_0"] }
}

struct Export: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lora-export",
        abstract: "Export a model dir, or a LoRA adapter on it, as GGUF for llama.cpp and Ollama.",
        discussion: """
            Without --adapter, MODEL_DIR (full precision: a base model or a lora-merge output; llama, mistral or \
            qwen2) is written as a GGUF model: llama.cpp's metadata and tensor names, the q/k rows of llama models \
            permuted as llama.cpp expects, the byte-level BPE vocabulary with its pre-tokenizer, special tokens \
            and chat template. With --adapter, the adapter is written as a GGUF LoRA adapter (llama-cli --lora). \
            --type sets the 2-D weights' type (default: bf16 for a bf16 model, else f16; f32 for an adapter); \
            1-D tensors and norms stay f32, and q8_0 rows that are not whole blocks of 32 are written f16. \
            --ollama NAME also writes a Modelfile beside the output (ollama create NAME -f Modelfile).
            """)

    @Argument(help: "The model folder (for --adapter: the base model the adapter was trained on, 4-bit allowed).")
    var model: String

    @Option(help: "LoRA adapter to export instead of the model: a PEFT folder, a single-file adapter, or '-'.")
    var adapter: String?

    @Option(name: .shortAndLong, help: "Output .gguf file (must not exist unless --force).")
    var output: String

    @Option(help: "Type of the 2-D weights: f32, f16, bf16 or q8_0.")
    var type: GGMLType?

    @Option(help: "tokenizer.ggml.pre to write when the pre-tokenizer is not recognized (e.g. llama-bpe, qwen2, smollm).")
    var tokenizerPre: String?

    @Option(help: "general.name (default: the model or adapter folder's name).")
    var name: String?

    @Option(help: "Also write a Modelfile beside the output for `ollama create NAME`.")
    var ollama: String?

    @Option(help: "With --adapter --ollama: the base model's GGUF for the Modelfile's FROM.")
    var baseGguf: String?

    @Flag(help: "Replace an existing output file (and Modelfile).")
    var force = false

    @OptionGroup var common: CommonOptions

    func validate() throws {
        if baseGguf != nil && (adapter == nil || ollama == nil) {
            throw ValidationError("--base-gguf is for the Modelfile of an adapter export: give it with --adapter and --ollama")
        }
        if let n = ollama, n.isEmpty || n.contains(where: { $0.isWhitespace }) {
            throw ValidationError("--ollama NAME must be a model name without spaces, e.g. smollm2-kestrava")
        }
        if let p = tokenizerPre, p.isEmpty { throw ValidationError("--tokenizer-pre needs a name, e.g. llama-bpe") }
    }

    func run() throws {
        try common.apply()
        let started = Date()
        let m = try ModelDir(path: model)
        var o = GGUFExportOptions()
        o.type = type
        o.tokenizerPre = tokenizerPre
        o.name = name
        o.replace = force
        let outDir = (output as NSString).deletingLastPathComponent
        let modelfilePath = outDir.isEmpty ? "Modelfile" : outDir + "/Modelfile"
        if ollama != nil, !force, FileManager.default.fileExists(atPath: modelfilePath) {
            throw FileError.cannotWrite(path: modelfilePath, reason: "already exists; choose another output folder or pass --force")
        }
        let s: GGUFExportSummary
        if let a = adapter {
            s = try GGUFExport.exportAdapter(m, adapter: try Adapter.load(a), to: output, options: o, warn: { Log.warn($0) })
        } else {
            s = try GGUFExport.exportModel(m, to: output, options: o, warn: { Log.warn($0) })
        }
        for t in s.fellBackToF16 { Log.warn("\(t): row width is not a multiple of 32, written as f16 instead of q8_0 (as llama.cpp's converter does)") }

        var r = JSONObject()
        r["output"] = .string(output)
        r["kind"] = .string(s.kind)
        r["arch"] = .string(s.arch)
        r["type"] = .string(s.type.name.lowercased())
        r["tensors"] = .int(Int64(s.tensors))
        r["bytes"] = .int(Int64(s.bytes))
        if let p = s.tokenizerPre { r["tokenizer_pre"] = .string(p); r["tokenizer_pre_by"] = .string(s.tokenizerPreSource ?? "") }
        if let a = s.alpha { r["lora_alpha"] = .double(a) }
        r["f16_fallback"] = .array(s.fellBackToF16.map { .string($0) })
        if s.kind == "adapter" { r["folded_scaling"] = .array(s.foldedScaling.map { .string($0) }) }
        if let n = ollama {
            let tok = try Tokenizer.load(directory: model)
            let file = URL(fileURLWithPath: output).lastPathComponent
            let from: String, placeholder: Bool
            if adapter == nil { from = "./" + file; placeholder = false } else if let b = baseGguf { from = b; placeholder = false } else {
                from = "./base.gguf"; placeholder = true
            }
            let mf = OllamaModelfile.text(name: n, from: from, fromIsPlaceholder: placeholder, adapter: adapter == nil ? nil : "./" + file,
                                          chatTemplate: tok.chatTemplate, bos: tok.bosToken, eos: tok.eosToken, addBos: tok.addBosToken)
            try AtomicFile.write(mf.text, to: modelfilePath)
            r["modelfile"] = .string(modelfilePath)
            r["modelfile_template"] = mf.family.map { .string($0) } ?? .null
            r["ollama_create"] = .string("ollama create \(n) -f \(modelfilePath)")
        }
        r["seconds"] = .double((Date().timeIntervalSince(started) * 100).rounded() / 100)
        emitJSON(.object(r))
    }
}

runMain(Export.self)
