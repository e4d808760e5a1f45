// TrainCLI: the parts of lora-train that are not flag parsing: option checks, example building with counts,
// the run fingerprint, the output folder rules, and printing metrics / the final summary.
import Foundation
import LoRAShared

public struct DataStats: Sendable {
    public var truncated = 0, dropped = 0, targets = 0
}

public enum TrainCLI {
    public static func validate(_ o: TrainOptions) throws {
        func need(_ ok: Bool, _ msg: String) throws { if !ok { throw UsageError(msg) } }
        try need(o.seqLen >= 2, "--seq-len must be at least 2")
        try need((1...Limits.maxBatchSize).contains(o.batchSize), "--batch-size must be in 1...\(Limits.maxBatchSize)")
        try need((1...Limits.maxGradAccum).contains(o.gradAccum), "--grad-accum must be in 1...\(Limits.maxGradAccum)")
        try need((1...Limits.maxEpochs).contains(o.epochs), "--epochs must be in 1...\(Limits.maxEpochs)")
        try need(o.maxSteps.map { (1...Limits.maxSteps).contains($0) } ?? true, "--max-steps must be in 1...\(Limits.maxSteps)")
        try need(o.adam.lr > 0 && o.adam.lr < 1 && o.adam.lr.isFinite, "--lr \(o.adam.lr) makes no sense; use a small positive value such as 2e-4")
        try need(o.warmupRatio >= 0 && o.warmupRatio < 1, "--warmup-ratio must be in [0, 1)")
        try need(o.warmupSteps.map { (0...Limits.maxSteps).contains($0) } ?? true, "--warmup-steps must be in 0...\(Limits.maxSteps)")
        try need(o.adam.weightDecay >= 0 && o.adam.weightDecay < 1, "--weight-decay must be in [0, 1)")
        try need((0..<1).contains(o.adam.beta1) && (0..<1).contains(o.adam.beta2), "--adam-beta1 and --adam-beta2 must be in [0, 1)")
        try need(o.adam.eps > 0 && o.adam.eps.isFinite, "--adam-eps must be a positive finite number")
        try need(o.loraplusLrRatio > 0 && o.loraplusLrRatio <= 1e6 && o.loraplusLrRatio.isFinite,
                 "--loraplus-lr-ratio \(o.loraplusLrRatio) must be a positive number (1: plain LoRA; LoRA+ uses about 2 to 32, e.g. 16)")
        try need(o.maxGradNorm >= 0 && o.maxGradNorm.isFinite, "--max-grad-norm must be a non-negative finite number")
        try need(o.logEvery >= 1 && o.evalEvery >= 0 && o.saveEvery >= 0 && o.keepLast >= 1,
                 "--log-every ≥ 1, --eval-every ≥ 0, --save-every ≥ 0 and --keep-last ≥ 1")
    }

    /// Tokenized examples; an example whose targets are all cut by --seq-len is an error (or, with
    /// --skip-bad-lines, counted as dropped).
    public static func examples(_ file: JSONLFile, tokenizer: Tokenizer, maskPrompt: Bool?, seqLen: Int, vocab: Int,
                                skipBad: Bool) throws -> ([Example], DataStats) {
        let builder = try ExampleBuilder(tokenizer: tokenizer, maskPrompt: maskPrompt, path: file.path, maxTokens: seqLen)
        var out: [Example] = []
        var st = DataStats()
        for r in file.records {
            do {
                let e = try builder.build(r)
                try e.checkVocabulary(vocab, path: file.path)
                let kept = try e.checkScored(seqLen: seqLen, path: file.path)
                if e.ids.count > seqLen { st.truncated += 1 }
                st.targets += kept
                out.append(e)
            } catch {
                if skipBad { st.dropped += 1; Log.warn("skipped \(error)"); continue }
                throw error
            }
        }
        if out.isEmpty { throw TrainError.noExamples(reason: "\(file.path): every example was dropped") }
        return (out, st)
    }

    /// Identity of a run: what a checkpoint must share to be resumed.
    public static func fingerprint(model: ModelDir, adapter: Adapter, data: JSONLFile, options o: TrainOptions, maskPrompt: Bool?) -> String {
        var f = Fingerprint()
        f.add(JSONValue.object(model.config.raw).serialized(sortKeys: true))
        f.add(adapter.configJSON())
        for n in adapter.moduleNames { f.add(n); f.add(String(adapter.modules[n]!.r)) }
        for r in data.records { f.add(String(r.line)); f.add(JSONValue.object(r.value).serialized()) }
        f.add("\(o.seqLen) \(o.batchSize) \(o.gradAccum) \(o.epochs) \(o.maxSteps ?? -1) \(o.adam) \(o.schedule) \(o.warmupSteps ?? -1) \(o.warmupRatio) \(o.maxGradNorm) \(o.packing) \(o.seed) \(o.dropout) \(String(describing: maskPrompt))")
        // f32 adds nothing, so checkpoints from before --compute-dtype (all f32) still resume.
        if o.compute.dtype != .f32 { f.add("compute-dtype \(o.compute.dtype.rawValue)") }
        // Likewise LoRA+ off (ratio 1) adds nothing.
        if o.loraplusLrRatio != 1 { f.add("loraplus-lr-ratio \(o.loraplusLrRatio)") }
        return f.value
    }

    /// What every MPI rank must share, named as the user would name it: compared across ranks at start (one max
    /// reduction of their hashes), so a rank launched with another flag, data file or adapter is named before any
    /// step. --threads and the like may differ per rank and are not listed.
    public static func rankItems(model: ModelDir, adapter: Adapter, data: JSONLFile, valid: [Window], options o: TrainOptions,
                                 maskPrompt: Bool?, output: String, resumedStep: Int) -> [(name: String, value: String)] {
        var weights = Fingerprint()
        for n in adapter.moduleNames {
            let m = adapter.modules[n]!
            weights.add(n)
            m.a.withUnsafeBytes { weights.add($0) }
            m.b.withUnsafeBytes { weights.add($0) }
        }
        var rows = Fingerprint()
        for r in data.records { rows.add(String(r.line)); rows.add(JSONValue.object(r.value).serialized()) }
        var v = Fingerprint()
        for w in valid { w.ids.withUnsafeBytes { v.add($0) }; w.labels.withUnsafeBytes { v.add($0) } }
        return [
            ("model (config.json)", JSONValue.object(model.config.raw).serialized(sortKeys: true)),
            ("adapter", adapter.configJSON() + weights.value),
            ("training data (--data)", rows.value),
            ("validation data (--valid)", v.value),
            ("--seq-len", "\(o.seqLen)"), ("--batch-size", "\(o.batchSize)"), ("--grad-accum", "\(o.gradAccum)"),
            ("--epochs", "\(o.epochs)"), ("--max-steps", "\(o.maxSteps ?? -1)"), ("--lr", "\(o.adam.lr)"),
            ("--weight-decay", "\(o.adam.weightDecay)"), ("--adam-beta1", "\(o.adam.beta1)"), ("--adam-beta2", "\(o.adam.beta2)"),
            ("--adam-eps", "\(o.adam.eps)"), ("--loraplus-lr-ratio", "\(o.loraplusLrRatio)"), ("--lr-schedule", o.schedule.rawValue), ("--warmup-steps", "\(o.warmupSteps ?? -1)"),
            ("--warmup-ratio", "\(o.warmupRatio)"), ("--max-grad-norm", "\(o.maxGradNorm)"), ("--packing", "\(o.packing)"),
            ("--seed", "\(o.seed)"), ("--dropout", "\(o.dropout)"), ("--mask-prompt", String(describing: maskPrompt)),
            ("--grad-checkpoint", "\(o.gradCheckpoint)"), ("--compute-dtype", o.compute.dtype.rawValue),
            ("--log-every", "\(o.logEvery)"), ("--eval-every", "\(o.evalEvery)"), ("--save-every", "\(o.saveEvery)"),
            ("--keep-last", "\(o.keepLast)"), ("--output", output), ("resume step (--resume)", "\(resumedStep)"),
        ]
    }

    /// The output folder's lock: held (flock on the folder itself, so nothing is left behind) for the whole run.
    nonisolated(unsafe) static var outputLock: Int32 = -1

    /// Makes `out` ready: created if missing (and then removed again if the run fails before it holds a usable
    /// checkpoint or adapter), locked against a second lora-train on the same folder (exit 75), refused when it
    /// already holds a run unless --resume or --force, and probed for writability.
    public static func prepareOutput(_ out: String, resume: Bool, force: Bool) throws {
        let fm = FileManager.default
        var isDir: ObjCBool = false
        var created = false
        if fm.fileExists(atPath: out, isDirectory: &isDir) {
            guard isDir.boolValue else { throw FileError.cannotWrite(path: out, reason: "exists and is not a folder") }
        } else {
            do { try fm.createDirectory(atPath: out, withIntermediateDirectories: true) } catch {
                throw FileError.cannotWrite(path: out, reason: error.localizedDescription)
            }
            created = true
            PendingOutputs.shared.add(out)
        }
        let fd = open(out, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw FileError.cannotOpen(path: out, reason: String(cString: strerror(errno))) }
        if flock(fd, LOCK_EX | LOCK_NB) != 0 {
            let e = errno
            close(fd)
            if created { PendingOutputs.shared.remove(out) }
            if e == EWOULDBLOCK {
                throw LockHeldError("\(out): another lora-train is writing this folder; wait for it to finish or choose another --output")
            }
            throw FileError.cannotOpen(path: out, reason: "cannot lock: \(String(cString: strerror(e)))")
        }
        outputLock = fd
        Checkpoint.removeLeftovers(out + "/checkpoints")  // what a killed run left, now that no other run can own it
        if !created {
            let finished = fm.fileExists(atPath: out + "/adapter_model.safetensors"), stopped = !Checkpoint.list(out).isEmpty
            if finished && !resume && !force {
                // Not --resume: a finished run has no step left to continue.
                throw FileError.cannotWrite(path: out, reason: "already holds a finished run (adapter_model.safetensors); pass --force to train again from the start, or choose another folder")
            }
            if stopped && !resume && !force {
                throw FileError.cannotWrite(path: out, reason: "holds the checkpoints of a stopped run; pass --resume to continue it, --force to start over, or choose another folder")
            }
            if force && !resume {
                try? fm.removeItem(atPath: out + "/checkpoints")
                try? fm.removeItem(atPath: out + "/" + TrainCLI.lossCurveName)  // the old run's curve
            }
        }
        // Probe writability now rather than after the first hour of training.
        let probe = out + "/.write-test-\(getpid())"
        guard fm.createFile(atPath: probe, contents: Data()) else { throw FileError.cannotWrite(path: out, reason: "not writable") }
        try? fm.removeItem(atPath: probe)
    }

    public static func saveConfig(_ out: String, _ o: TrainOptions, model: String, adapter: String, data: String, valid: String?, maskPrompt: Bool?) throws {
        var c = JSONObject()
        c["model"] = .string(model); c["adapter"] = .string(adapter); c["data"] = .string(data)
        c["valid"] = valid.map { .string($0) } ?? .null
        c["seq-len"] = .int(Int64(o.seqLen)); c["batch-size"] = .int(Int64(o.batchSize)); c["grad-accum"] = .int(Int64(o.gradAccum))
        c["epochs"] = .int(Int64(o.epochs)); c["max-steps"] = o.maxSteps.map { .int(Int64($0)) } ?? .null
        c["lr"] = .double(o.adam.lr); c["lr-schedule"] = .string(o.schedule.rawValue)
        c["warmup-steps"] = o.warmupSteps.map { .int(Int64($0)) } ?? .null; c["warmup-ratio"] = .double(o.warmupRatio)
        c["weight-decay"] = .double(o.adam.weightDecay); c["adam-beta1"] = .double(o.adam.beta1); c["adam-beta2"] = .double(o.adam.beta2)
        c["adam-eps"] = .double(o.adam.eps); c["loraplus-lr-ratio"] = .double(o.loraplusLrRatio); c["max-grad-norm"] = .double(o.maxGradNorm); c["dropout"] = .double(o.dropout)
        c["mask-prompt"] = maskPrompt.map { .bool($0) } ?? .null; c["packing"] = .bool(o.packing); c["seed"] = .int(Int64(o.seed))
        c["grad-checkpoint"] = .bool(o.gradCheckpoint)
        c["compute-dtype"] = .string(o.compute.dtype.rawValue)
        if o.compute.backend == .emulated { c["compute-backend"] = .string("emulated") }
        c["log-every"] = .int(Int64(o.logEvery)); c["eval-every"] = .int(Int64(o.evalEvery))
        c["save-every"] = .int(Int64(o.saveEvery)); c["keep-last"] = .int(Int64(o.keepLast))
        try AtomicFile.write(JSONValue.object(c).serialized(.indented(2)) + "\n", to: out + "/training_config.json")
    }

    static func round(_ x: Double, _ digits: Double = 1e6) -> JSONValue { .double((x * digits).rounded() / digits) }

    /// The loss curve in the output folder (see LossPlot).
    public static let lossCurveName = "loss.svg"

    /// Trains, printing a metrics line per logged step, and keeps OUT/loss.svg up to date (written atomically at
    /// each logged step, with the points from before a resume). `model` names the run in the curve's title.
    public static func run(_ t: Trainer, stats: DataStats, out: String, model: String = "") throws {
        var bar: ProgressBar? = nil
        let curvePath = out + "/" + lossCurveName
        let title = LossPlot.title(model: model.isEmpty ? out : model, r: t.model.lora.values.map(\.r).max() ?? 0, lr: t.options.adam.lr,
                                   steps: t.totalSteps)
        var curveFailed = false
        // A curve that cannot be written (disk full) is warned about once; training goes on.
        func writeCurve() {
            guard !t.history.isEmpty else { return }
            do { try LossPlot(title: title, points: t.history).write(to: curvePath) } catch {
                if !curveFailed { Log.warn("cannot write the loss curve: \(error)") }
                curveFailed = true
            }
        }
        let writer = t.isWriter  // MPI ranks other than 0 train and reduce, and write nothing
        if t.state.step > 0 && writer {
            if let p = t.historyProblem { Log.info("\(p); the loss curve starts at step \(t.state.step + 1)") }
            writeCurve()
        }
        var lastValid: Double? = nil
        var lossSum = 0.0, lossCount = 0
        t.stopRequested = { Interrupt.received != 0 }
        t.onProgress = { done, total in
            guard writer else { return }
            if bar == nil { bar = ProgressBar(total: total, label: "train", unit: " steps") }
            // On a terminal the line ends with a sparkline of the recent logged losses.
            let spark = bar!.isTTY ? Sparkline.render(t.history.map(\.loss)) : ""
            // Data-parallel: the rate of all ranks together (every rank counts the whole global batch's tokens).
            let rate = t.ranks > 1 && t.state.elapsedSeconds > 0
                ? String(format: ", %d ranks %.0f tok/s", t.ranks, Double(t.state.tokensSeen) / t.state.elapsedSeconds) : ""
            bar!.update(done, detail: String(format: "loss %.4f", t.state.lastLoss) + rate + (spark.isEmpty ? "" : " " + spark))
        }
        t.onCheckpoint = {
            PendingOutputs.shared.remove(out)  // it holds a usable checkpoint now: keep it even if the run fails
            Log.info("checkpoint \($0)")
        }
        t.onStep = { r in
            guard writer else { return }
            var o = JSONObject()
            o["step"] = .int(Int64(r.step)); o["epoch"] = round(r.epoch, 1e4); o["loss"] = round(r.loss)
            o["lr"] = .double(r.lr); o["grad_norm"] = round(r.gradNorm); o["tokens_per_s"] = round(r.tokensPerSecond, 10)
            o["elapsed_s"] = round(r.elapsed, 100)
            o["compute_dtype"] = .string(t.options.compute.label)
            if let v = r.validLoss { o["valid_loss"] = round(v); o["valid_ppl"] = round(Foundation.exp(v), 1e4); lastValid = v }
            lossSum += r.loss; lossCount += 1
            emitJSON(.object(o))
            writeCurve()
        }
        let finished = try t.run()
        if !finished {
            Log.info("stopped at step \(t.state.step); continue with --resume")
            fflush(stdout)
            ProcessGroup.finish?()
            // A rank that got no signal itself stopped because another did: it exits as SIGTERM would have it.
            exit(128 + (Interrupt.received != 0 ? Interrupt.received : SIGTERM))
        }
        guard writer else { return }
        try t.currentAdapter().save(into: out)
        PendingOutputs.shared.remove(out)
        writeCurve()
        Profiler.shared.report()
        var ru = rusage()
        getrusage(RUSAGE_SELF.rawValue, &ru)
        var o = JSONObject()
        o["final"] = .bool(true); o["steps"] = .int(Int64(t.state.step)); o["train_loss"] = round(t.state.lastLoss)
        o["mean_logged_loss"] = lossCount > 0 ? round(lossSum / Double(lossCount)) : .null
        o["valid_loss"] = lastValid.map { round($0) } ?? .null
        o["valid_ppl"] = lastValid.map { round(Foundation.exp($0), 1e4) } ?? .null
        o["tokens"] = .int(Int64(t.state.tokensSeen)); o["examples"] = .int(Int64(t.examples.count))
        o["truncated"] = .int(Int64(stats.truncated)); o["dropped"] = .int(Int64(stats.dropped))
        o["seconds"] = round(t.state.elapsedSeconds, 100); o["peak_rss_mb"] = round(Double(ru.ru_maxrss) / 1024, 10)
        o["adapter"] = .string(out)
        o["loss_curve"] = !curveFailed && FileManager.default.fileExists(atPath: curvePath) ? .string(curvePath) : .null
        o["compute_dtype"] = .string(t.options.compute.label)
        if t.ranks > 1 { o["ranks"] = .int(Int64(t.ranks)) }
        emitJSON(.object(o))
    }
}

