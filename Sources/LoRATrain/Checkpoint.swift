// Checkpoint: OUT/checkpoints/step-NNNNNNN/ with the adapter (PEFT layout), optimizer.safetensors (AdamW
// moments, F32, `<module>.lora_{A,B}.weight.exp_avg[_sq]`), trainer_state.json (step, epoch, position in
// the data order, the run's fingerprint) and log_history.json (the logged points, for the loss curve). Built under
// a temporary name and renamed; never trusted blindly.
import Foundation

public struct TrainerState: Codable, Sendable, Equatable {
    public var step: Int
    public var epoch: Int
    public var batchInEpoch: Int       // batches of `epoch` already consumed
    public var tokensSeen: Int
    public var fingerprint: String     // identity of the run (model, adapter config, data, hyperparameters, seed)
    public var elapsedSeconds: Double
    public var lastLoss: Double
    public var format = "lora-pipeline-checkpoint-1"
    /// "f32" or "bf16" (absent in checkpoints from before --compute-dtype: f32).
    public var computeDType: String?
    /// MPI ranks of the run (absent: one process). The data order and the global batch depend on it, so a
    /// checkpoint resumes only with the same number.
    public var worldSize: Int?

    enum CodingKeys: String, CodingKey {
        case step, epoch, batchInEpoch, tokensSeen, fingerprint, elapsedSeconds, lastLoss, format
        case computeDType = "compute_dtype"
        case worldSize = "world_size"
    }
}

extension TrainerState {
    /// Range checks of a loaded state against the run that resumes it: every integer is used for indexing or
    /// arithmetic, so a damaged or hand-edited trainer_state.json is refused here, naming the field.
    public func validate(path: String, totalSteps: Int, batchesPerEpoch: Int, maxTokensPerStep: Int) throws {
        func bad(_ r: String) -> CheckpointError { .corrupt(path: path, reason: "trainer_state.json: \(r)") }
        guard format == "lora-pipeline-checkpoint-1" else { throw bad("unknown format '\(format)'") }
        guard (0...totalSteps).contains(step) else { throw bad("step \(step) is outside 0...\(totalSteps), this run's steps") }
        // Every epoch takes at least one step.
        guard epoch >= 0, epoch <= step else { throw bad("epoch \(epoch) is impossible at step \(step)") }
        guard (0...batchesPerEpoch).contains(batchInEpoch) else {
            throw bad("batchInEpoch \(batchInEpoch) is outside 0...\(batchesPerEpoch), the batches of one epoch")
        }
        let (cap, overflow) = maxTokensPerStep.multipliedReportingOverflow(by: max(step, 1))
        guard tokensSeen >= 0, overflow || tokensSeen <= cap else { throw bad("tokensSeen \(tokensSeen) is impossible at step \(step)") }
        // A century of training is more than any run; beyond it the value is damage.
        guard elapsedSeconds.isFinite, elapsedSeconds >= 0, elapsedSeconds < 3.2e9 else {
            throw bad("elapsedSeconds \(elapsedSeconds) is not a plausible duration")
        }
        guard step == 0 || lastLoss.isFinite else { throw bad("lastLoss \(lastLoss) is not finite") }
        if let d = computeDType, ComputeDType(rawValue: d) == nil { throw bad("compute_dtype '\(d)' is neither f32 nor bf16") }
    }
}

public enum CheckpointError: Error, CustomStringConvertible, ToolError {
    case foreign(path: String, reason: String)
    case corrupt(path: String, reason: String)
    case none(dir: String)
    case computeDType(path: String, checkpoint: String, run: String)
    case worldSize(path: String, checkpoint: Int, run: Int)

    public var description: String {
        switch self {
        case .foreign(let p, let r):
            return "\(p): checkpoint from another run (\(r)); resume with the same model, adapter, data and hyperparameters, or use a new output folder"
        case .corrupt(let p, let r): return "\(p): corrupt checkpoint (\(r)); resume from an earlier one with --resume PATH, or start over"
        case .none(let d): return "\(d): no checkpoint to resume from (expected checkpoints/step-NNNNNNN)"
        case .worldSize(let p, let c, let r):
            func ranks(_ n: Int) -> String { n == 1 ? "a single process" : "\(n) MPI ranks" }
            return "\(p): checkpoint was written by \(ranks(c)) but this run has \(ranks(r)); the data order and the global batch depend on the rank count, so resume it with \(c == 1 ? "a plain lora-train (no mpirun)" : "mpirun -np \(c)"), or start a new run in another folder"
        case .computeDType(let p, let c, let r):
            return "\(p): checkpoint was trained with --compute-dtype \(c) but this run computes in \(r); pass --compute-dtype \(c) to resume it (on a CPU that has it), or start a new run in another folder"
        }
    }
}

public enum Checkpoint {
    public static func name(step: Int) -> String { String(format: "step-%07d", step) }

    /// Checkpoint folders under OUT/checkpoints, oldest first.
    public static func list(_ outDir: String) -> [(step: Int, path: String)] {
        let dir = outDir + "/checkpoints"
        let names = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
        return names.compactMap { n -> (Int, String)? in
            guard n.hasPrefix("step-"), let s = Int(n.dropFirst(5)) else { return nil }
            return (s, dir + "/" + n)
        }.sorted { $0.0 < $1.0 }
    }

    public static func save(to outDir: String, adapter: Adapter, optimizer: AdamWState, state: TrainerState, keepLast: Int,
                            history: [LogPoint] = []) throws -> String {
        let dir = outDir + "/checkpoints"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        removeLeftovers(dir)
        let final = dir + "/" + name(step: state.step)
        let d = try AtomicDirectory(path: final)
        try adapter.save(into: d.tempPath)
        var recs: [TensorRecord] = []
        for (key, m) in optimizer.m.sorted(by: { $0.key < $1.key }) {
            let param = paramName(key)
            recs.append(TensorRecord(name: param + ".exp_avg", floats: m, shape: [m.count]))
            recs.append(TensorRecord(name: param + ".exp_avg_sq", floats: optimizer.v[key]!, shape: [m.count]))
        }
        try SafetensorsWriter.write(recs, metadata: ["step": String(optimizer.step)], toFile: d.file("optimizer.safetensors"))
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys]
        try AtomicFile.write(String(decoding: try enc.encode(state), as: UTF8.self) + "\n", to: d.file("trainer_state.json"))
        try AtomicFile.write(try LogHistory.encode(history), to: d.file(LogHistory.fileName))
        try d.commit(replace: true)
        // Only now that the new checkpoint is complete, drop the oldest beyond keepLast: each is first renamed
        // to a hidden name (atomic), so a kill during the deletion never leaves a half-deleted checkpoint under
        // its real name for --resume to find.
        if keepLast > 0 {
            let all = list(outDir)
            for old in all.dropLast(keepLast) {
                let trash = dir + "/.trash-" + URL(fileURLWithPath: old.path).lastPathComponent + "-\(getpid())"
                if rename(old.path, trash) == 0 { try? FileManager.default.removeItem(atPath: trash) }
            }
        }
        return final
    }

    nonisolated(unsafe) private static var cleaned = Set<String>()

    /// Hidden folders a killed run left in checkpoints/ (a checkpoint under construction, one being deleted):
    /// removed once per run. lora-train holds the output folder's lock, so no other live process owns them.
    public static func removeLeftovers(_ dir: String) {
        guard !cleaned.contains(dir) else { return }
        cleaned.insert(dir)
        let mine = "-\(getpid())"
        for n in (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
        where n.hasPrefix(".") && (n.contains(".tmp-") || n.hasPrefix(".trash-")) && !n.contains(mine + "-") && !n.hasSuffix(mine) {
            try? FileManager.default.removeItem(atPath: dir + "/" + n)
        }
    }

    /// "model.layers.0.self_attn.q_proj.a" → "model.layers.0.self_attn.q_proj.lora_A.weight" (".b": lora_B;
    /// ".magnitude": DoRA's lora_magnitude_vector)
    static func paramName(_ key: String) -> String {
        if key.hasSuffix(".magnitude") { return String(key.dropLast(".magnitude".count)) + ".lora_magnitude_vector" }
        let module = String(key.dropLast(2))
        return module + (key.hasSuffix(".a") ? ".lora_A.weight" : ".lora_B.weight")
    }

    /// Loads and validates a checkpoint against the current run.
    /// `check` range-checks the state against the resuming run before anything in it is used.
    public static func load(_ path: String, fingerprint: String, computeDType: ComputeDType = .f32,
                            check: (TrainerState) throws -> Void = { _ in }) throws -> (Adapter, AdamWState, TrainerState) {
        let statePath = path + "/trainer_state.json"
        guard let data = FileManager.default.contents(atPath: statePath) else {
            throw CheckpointError.corrupt(path: path, reason: "trainer_state.json is missing")
        }
        let state: TrainerState
        do { state = try JSONDecoder().decode(TrainerState.self, from: data) } catch {
            throw CheckpointError.corrupt(path: path, reason: "trainer_state.json is unreadable: \(error)")
        }
        try check(state)
        let saved = state.computeDType ?? ComputeDType.f32.rawValue
        guard saved == computeDType.rawValue else {
            throw CheckpointError.computeDType(path: path, checkpoint: saved, run: computeDType.rawValue)
        }
        guard state.fingerprint == fingerprint else {
            throw CheckpointError.foreign(path: path, reason: "its fingerprint \(state.fingerprint) differs from this run's \(fingerprint)")
        }
        let adapter: Adapter
        let opt = AdamWState()
        do {
            adapter = try Adapter.load(path)
            let f = try SafetensorsFile(path: path + "/optimizer.safetensors")
            guard let s = f.metadata["step"].flatMap(Int.init), s == state.step else {
                throw CheckpointError.corrupt(path: path, reason: "optimizer step does not match trainer_state.json")
            }
            opt.step = s
            for n in adapter.moduleNames {
                let mod = adapter.modules[n]!
                for (w, key, count) in [(".lora_A.weight", n + ".a", mod.a.count), (".lora_B.weight", n + ".b", mod.b.count)]
                    + (mod.magnitude.map { [(".lora_magnitude_vector", n + ".magnitude", $0.count)] } ?? []) {
                    let m = try f.tensor("\(n)\(w).exp_avg"), v = try f.tensor("\(n)\(w).exp_avg_sq")
                    guard m.dtype == .F32, v.dtype == .F32, m.numel == count, v.numel == count else {
                        throw CheckpointError.corrupt(path: path, reason: "optimizer moments of \(n)\(w) have the wrong shape")
                    }
                    opt.m[key] = m.floats()
                    opt.v[key] = v.floats()
                }
            }
        } catch let e as CheckpointError {
            throw e
        } catch {
            throw CheckpointError.corrupt(path: path, reason: "\(error)")
        }
        for (k, v) in opt.m where v.contains(where: { !$0.isFinite }) || opt.v[k]!.contains(where: { !$0.isFinite }) {
            throw CheckpointError.corrupt(path: path, reason: "non-finite optimizer moments in \(k)")
        }
        return (adapter, opt, state)
    }
}

/// FNV-1a over bytes and strings: a stable fingerprint (not a security hash).
public struct Fingerprint {
    var h: UInt64 = 0xcbf2_9ce4_8422_2325
    public init() {}
    public mutating func add(_ bytes: UnsafeRawBufferPointer) { for b in bytes { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 } }
    public mutating func add(_ s: String) { var t = s + "\u{0}"; t.withUTF8 { add(UnsafeRawBufferPointer($0)) } }
    public var value: String { String(format: "%016llx", h) }
    public var raw: UInt64 { h }
}
