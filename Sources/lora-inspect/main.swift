// lora-inspect: what is this path? A model dir, an adapter, a checkpoint, a training run or a safetensors file,
// described as one JSON object on stdout (indented, for people and jq); statistics of one tensor; or the
// per-tensor difference of two models or two adapters.
import ArgumentParser
import Foundation
import LoRACLI
import LoRAShared
import LoRAInspect

struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lora-inspect",
        abstract: "Describe a model dir, adapter, checkpoint, training run or safetensors file as JSON.",
        discussion: """
            PATH is recognized by what it holds: trainer_state.json (a checkpoint), training_config.json (a run dir), \
            adapter_config.json (a PEFT adapter), config.json (a model dir), a .safetensors file (an adapter when its \
            metadata carries adapter_config), or '-' (an adapter on stdin). Adapters report per module ‖A‖, ‖B‖ and \
            ‖ΔW‖ = ‖scaling·B·A‖ (Frobenius, computed without forming ΔW), whether B is zero (untrained) and NaN/Inf \
            counts. --tensor NAME prints min/max/mean/std (population, over the finite values) and NaN/Inf/zero counts \
            of one tensor (a 4-bit weight: its dequantized values). --diff A B compares two models or two adapters \
            tensor by tensor: max |a-b| and max |a-b|/max(|a|,|b|).
            """)

    @Argument(help: "Model dir, adapter (folder, file or '-'), checkpoint dir, run dir or .safetensors file; two with --diff.")
    var paths: [String] = []

    @Flag(help: "List every tensor (name, dtype, shape, bytes) instead of counts per dtype and the largest few.")
    var tensors = false

    @Option(help: "How many of the largest tensors the summary lists.")
    var top: Int = 5

    @Option(help: "Statistics of the tensor NAME (min, max, mean, std, NaN, Inf, zeros).")
    var tensor: String?

    @Flag(help: "Compare two models or two adapters (PATH A and PATH B) tensor by tensor.")
    var diff = false

    func validate() throws {
        if diff {
            guard paths.count == 2 else { throw ValidationError("--diff takes two paths, A and B (got \(paths.count))") }
            guard tensor == nil else { throw ValidationError("--diff and --tensor cannot be combined") }
        } else {
            guard paths.count == 1 else { throw ValidationError("expected one PATH (got \(paths.count)); --diff compares two") }
        }
        guard (0...100_000).contains(top) else { throw ValidationError("--top must be in 0...100000") }
    }

    func run() throws {
        let result: JSONValue
        if diff {
            result = try Inspector.diff(paths[0], paths[1])
        } else if let name = tensor {
            result = try Inspector.tensorStats(paths[0], tensor: name)
        } else {
            result = try Inspector.inspect(paths[0], options: InspectOptions(listTensors: tensors, top: top))
        }
        print(result.serialized(.indented(2)))
    }
}

runMain(Inspect.self)
