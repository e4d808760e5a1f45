// Trainer: the LoRA training loop: epochs of length-grouped (or packed) batches, gradient accumulation with the
// loss normalized over all scored tokens of the update, clipping, AdamW with a warmup schedule, periodic
// validation and checkpoints, resume, graceful stop on request, and refusal to go on after a non-finite loss.
// It reports through callbacks and never prints.
import Foundation

public struct TrainOptions: Sendable {
    public var seqLen = Defaults.seqLen
    public var batchSize = Defaults.batchSize
    public var gradAccum = Defaults.gradAccum
    public var epochs = Defaults.epochs
    public var maxSteps: Int? = nil
    public var adam = AdamWConfig()
    /// LoRA+ (PEFT's create_loraplus_optimizer): lora_B is updated at this × the scheduled lr (1: off).
    public var loraplusLrRatio = Defaults.loraplusLrRatio
    public var schedule = LRSchedule(rawValue: Defaults.lrSchedule) ?? .linear
    public var warmupSteps: Int? = nil
    public var warmupRatio = Defaults.warmupRatio
    public var maxGradNorm = Defaults.maxGradNorm
    public var packing = false
    public var seed: UInt64 = 0
    public var dropout: Double = 0
    public var logEvery = Defaults.logEvery
    public var evalEvery = Defaults.evalEvery
    public var saveEvery = Defaults.saveEvery
    public var keepLast = Defaults.keepLast
    public var gradCheckpoint = false
    /// The compute dtype the model runs with (recorded in the fingerprint when not f32, in the checkpoint and
    /// in training_config.json; a resume must use the same).
    public var compute = ComputeChoice.f32
    public init() {}
}

public struct StepReport: Sendable {
    public var step: Int, totalSteps: Int, epoch: Double, loss: Double, lr: Double, gradNorm: Double
    public var tokens: Int, tokensPerSecond: Double, elapsed: Double
    public var validLoss: Double?
}

public enum TrainError: Error, CustomStringConvertible, ToolError {
    case nonFinite(step: Int, what: String, checkpoint: String?)
    case noExamples(reason: String)

    public var description: String {
        switch self {
        case .nonFinite(let s, let w, let c):
            return "step \(s): \(w) is not finite; training stopped\(c.map { ", the last good checkpoint is \($0)" } ?? " before any checkpoint was written"); lower --lr or check the data"
        case .noExamples(let r): return "no usable training example: \(r)"
        }
    }
}

public final class Trainer {
    public let model: Transformer
    public var adapterConfig: LoRAConfig
    public let examples: [Example]
    public let valid: [Window]
    public let options: TrainOptions
    public let outDir: String
    public let fingerprint: String
    /// The MPI ranks training together (nil: this process alone). See DataParallel.
    public let world: Collective?
    public var optimizer = AdamWState()
    public var state: TrainerState
    /// Set from a signal handler: finish the current step, checkpoint, return.
    public var stopRequested: () -> Bool = { false }
    public var onStep: (StepReport) -> Void = { _ in }
    public var onCheckpoint: (String) -> Void = { _ in }
    public var onProgress: (Int, Int) -> Void = { _, _ in }
    public private(set) var lastCheckpoint: String?
    /// Whether the last optimizer step's reduction carried a stop request from any rank (data-parallel runs).
    public private(set) var stopAgreed = false
    /// Every logged point of the run so far (restored by resume from the checkpoint's log_history.json), saved with
    /// each checkpoint; the loss curve is drawn from it.
    public private(set) var history: [LogPoint] = []
    /// Set by resume when the checkpoint holds no usable history (the curve then starts at the resume).
    public private(set) var historyProblem: String?
    /// Test hook: LORA_TEST_NAN_AT_STEP=k makes step k's loss NaN, to exercise the stop-and-keep-checkpoint path.
    static let nanAtStep = ProcessInfo.processInfo.environment["LORA_TEST_NAN_AT_STEP"].flatMap(Int.init)
    /// Test hook: LORA_TEST_STEP_SLEEP_MS=t sleeps t ms before each step, so a test's signal lands mid-run.
    static let stepSleep = ProcessInfo.processInfo.environment["LORA_TEST_STEP_SLEEP_MS"].flatMap(UInt32.init)

    public init(model: Transformer, adapterConfig: LoRAConfig, examples: [Example], valid: [Window],
                options: TrainOptions, outDir: String, fingerprint: String, world: Collective? = nil) {
        self.model = model
        self.adapterConfig = adapterConfig
        self.examples = examples
        self.valid = valid
        self.options = options
        self.outDir = outDir
        self.fingerprint = fingerprint
        self.world = world
        state = TrainerState(step: 0, epoch: 0, batchInEpoch: 0, tokensSeen: 0, fingerprint: fingerprint, elapsedSeconds: 0, lastLoss: .nan,
                             computeDType: options.compute.dtype.rawValue, worldSize: (world?.size ?? 1) > 1 ? world!.size : nil)
    }

    /// Processes training together (1 without MPI).
    public var ranks: Int { world?.size ?? 1 }
    /// Whether this process writes the outputs (checkpoints, metrics, the adapter): rank 0, or the only process.
    public var isWriter: Bool { (world?.rank ?? 0) == 0 }
    /// Sequences of one global micro-batch: --batch-size on each rank.
    public var globalMicroBatch: Int { options.batchSize * ranks }

    /// Sequences per epoch (the data order's units: examples, or packed rows).
    public var sequencesPerEpoch: Int {
        Batching.epoch(examples, epoch: 0, seed: options.seed, batchSize: globalMicroBatch, seqLen: options.seqLen, packing: options.packing)
            .reduce(0) { $0 + $1.count }
    }

    public var batchesPerEpoch: Int {
        Batching.epoch(examples, epoch: 0, seed: options.seed, batchSize: globalMicroBatch, seqLen: options.seqLen, packing: options.packing).count
    }

    public var totalSteps: Int {
        if let m = options.maxSteps { return m }
        return options.epochs * ((batchesPerEpoch + options.gradAccum - 1) / options.gradAccum)
    }

    var warmup: Int { options.warmupSteps ?? (options.warmupRatio > 0 ? Int((options.warmupRatio * Double(totalSteps)).rounded(.up)) : 0) }

    /// The adapter as it stands (PEFT layout).
    public func currentAdapter() -> Adapter {
        let mods = model.lora.keys.sorted { $0.compare($1, options: .numeric) == .orderedAscending }.map { n -> (String, LoRAWeights) in
            let l = model.lora[n]!
            return (n, LoRAWeights(r: l.r, inFeatures: l.a.count / l.r, outFeatures: l.b.count / l.r, a: l.a, b: l.b, magnitude: l.magnitude))
        }
        return Adapter(config: adapterConfig, modules: mods, source: "<training>")
    }

    public func resume(from path: String) throws {
        let perStep = globalMicroBatch.multipliedReportingOverflow(by: options.gradAccum)
        let tokens = perStep.partialValue.multipliedReportingOverflow(by: options.seqLen)
        let (adapter, opt, st) = try Checkpoint.load(path, fingerprint: fingerprint, computeDType: options.compute.dtype) { st in
            if (st.worldSize ?? 1) != ranks { throw CheckpointError.worldSize(path: path, checkpoint: st.worldSize ?? 1, run: ranks) }
            // The bound of batchInEpoch is the batch count of the checkpoint's own epoch (packing varies it).
            let epochBatches = st.epoch >= 0 && st.epoch <= st.step
                ? Batching.epoch(examples, epoch: st.epoch, seed: options.seed, batchSize: globalMicroBatch, seqLen: options.seqLen,
                                 packing: options.packing).count : 0
            try st.validate(path: path, totalSteps: totalSteps, batchesPerEpoch: epochBatches,
                            maxTokensPerStep: perStep.overflow || tokens.overflow ? Int.max : tokens.partialValue)
        }
        for n in adapter.moduleNames {
            guard var l = model.lora[n] else { throw CheckpointError.foreign(path: path, reason: "module \(n) is not in this run's adapter") }
            let w = adapter.modules[n]!
            guard w.a.count == l.a.count, w.b.count == l.b.count, (w.magnitude == nil) == (l.magnitude == nil) else {
                throw CheckpointError.foreign(path: path, reason: "module \(n) has another shape")
            }
            l.a = w.a
            l.b = w.b
            l.magnitude = w.magnitude
            model.setLoRA(n, l)
        }
        optimizer = opt
        state = st
        lastCheckpoint = path
        (history, historyProblem) = LogHistory.load(checkpoint: path, upTo: st.step)
    }

    func checkpoint() throws {
        try checkRanksAgree()
        guard isWriter else {  // rank 0 writes it; the others only know its name
            lastCheckpoint = outDir + "/checkpoints/" + Checkpoint.name(step: state.step)
            return
        }
        let p = try Checkpoint.save(to: outDir, adapter: currentAdapter(), optimizer: optimizer, state: state, keepLast: options.keepLast,
                                     history: history)
        lastCheckpoint = p
        onCheckpoint(p)
    }

    /// Data-parallel runs: every rank applied the same updates to the same weights, so the weights must be equal
    /// bit for bit; checked (one max reduction of a hash) before each checkpoint and at the end, so what rank 0
    /// writes is what every rank trains.
    public func checkRanksAgree() throws {
        guard let w = world, w.size > 1 else { return }
        var f = Fingerprint()
        for n in model.lora.keys.sorted() {
            let l = model.lora[n]!
            l.a.withUnsafeBytes { f.add($0) }
            l.b.withUnsafeBytes { f.add($0) }
            l.magnitude?.withUnsafeBytes { f.add($0) }
        }
        let h = Double(f.raw & ((1 << 52) - 1))
        var buf = [h, -h]
        try w.max(&buf)
        if buf[0] != -buf[1] { throw DataParallelError.diverged(step: state.step) }
    }

    public func validationLoss() throws -> Double? {
        guard !valid.isEmpty else { return nil }
        let eo = EvalOptions(seqLen: options.seqLen, batchSize: options.batchSize)
        guard let w = world, w.size > 1 else {
            let (nll, n) = try Evaluator.evaluate(model, windows: valid, options: eo)
            return n > 0 ? nll / Double(n) : nil
        }
        // Sharded: rank r evaluates windows r, r + N, r + 2N, … (of the length-sorted list, so the work is even),
        // then one sum of (NLL, tokens).
        let order = valid.indices.sorted { valid[$0].ids.count > valid[$1].ids.count }
        let mine = stride(from: w.rank, to: order.count, by: w.size).map { valid[order[$0]] }
        var buf = [0.0, 0.0]
        if !mine.isEmpty {
            let (nll, n) = try Evaluator.evaluate(model, windows: mine, options: eo)
            buf = [nll, Double(n)]
        }
        try w.sum(&buf)
        return buf[1] > 0 ? buf[0] / buf[1] : nil
    }

    /// One optimizer step (number `step`, 1-based) on `group`, micro-batches whose gradients accumulate: the loss is
    /// normalized over all their scored tokens, then clipping and AdamW at `lr`. A non-finite loss or gradient norm
    /// throws before the weights change (naming `checkpoint`, the last good one). Returns the loss, the gradient
    /// norm before clipping, and the tokens seen.
    package func optimizerStep(_ group: [[TrainSequence]], grads: LoRAGradients, lr: Double, step: Int, dropout rate: Double,
                               checkpoint: String?) throws -> (loss: Double, gradNorm: Float, tokens: Int) {
        if let w = world, w.size > 1 {
            return try parallelStep(group, grads: grads, lr: lr, step: step, dropout: rate, checkpoint: checkpoint, world: w)
        }
        let tbs = group.map { Batching.tokenBatch($0, packed: options.packing) }
        let scored = group.reduce(0) { acc, b in acc + b.reduce(0) { $0 + $1.scored } }
        grads.zero()
        var nll = 0.0, tokens = 0
        if scored > 0 {
            for (mb, tb) in tbs.enumerated() {
                let dropout = rate > 0
                    ? LoRADropout(rate: Float(rate), seed: options.seed, step: UInt64(step - 1), microBatch: UInt64(mb)) : nil
                let r = try model.trainStep(tb, lossScale: 1 / Float(scored), grads: grads, dropout: dropout,
                                            checkpointLayers: options.gradCheckpoint)
                nll += r.nllSum
                tokens += tb.lengths.reduce(0, +)
            }
        }
        let loss = scored > 0 ? nll / Double(scored) : 0
        return (loss, try applyUpdate(loss: loss, grads: grads, step: step, lr: lr, checkpoint: checkpoint), tokens)
    }

    /// optimizerStep on one rank of N: `group` holds global micro-batches of N × --batch-size sequences (the same on
    /// every rank); this rank runs forward and backward on its slice of each, scaled by 1 / the global scored-token
    /// count (every rank counts it from the whole group, no communication), so the sum over ranks is the gradient
    /// the single process computes on the whole group. One sum over ranks of [gradients…, NLL, stop flag], then
    /// every rank clips and steps identically: the reduced buffer is the same on every rank (MPI_Allreduce returns
    /// one result to all; checkRanksAgree verifies the weights at each checkpoint), and stepping locally costs
    /// less than a broadcast of the new weights.
    func parallelStep(_ group: [[TrainSequence]], grads: LoRAGradients, lr: Double, step: Int, dropout rate: Double,
                      checkpoint: String?, world w: Collective) throws -> (loss: Double, gradNorm: Float, tokens: Int) {
        let b = options.batchSize
        let scored = group.reduce(0) { acc, mb in acc + mb.reduce(0) { $0 + $1.scored } }
        let tokens = group.reduce(0) { acc, mb in acc + mb.reduce(0) { $0 + $1.ids.count } }
        grads.zero()
        var nll = 0.0
        if scored > 0 {
            for (mb, global) in group.enumerated() {
                let mine = Array(DataParallel.shard(global, rank: w.rank, perRank: b))
                if mine.isEmpty { continue }
                let dropout: LoRADropout?
                let tb: TokenBatch
                if rate > 0 {
                    // Padded to the global micro-batch's length, rows offset by the sequences before this slice: the
                    // masks the single process draws for these rows.
                    let T = global.map(\.ids.count).max() ?? 1
                    tb = Batching.tokenBatch(mine, packed: options.packing, length: T)
                    dropout = LoRADropout(rate: Float(rate), seed: options.seed, step: UInt64(step - 1), microBatch: UInt64(mb),
                                          rowOffset: UInt64(w.rank * b * T))
                } else {
                    tb = Batching.tokenBatch(mine, packed: options.packing)
                    dropout = nil
                }
                let r = try model.trainStep(tb, lossScale: 1 / Float(scored), grads: grads, dropout: dropout,
                                            checkpointLayers: options.gradCheckpoint)
                nll += r.nllSum
            }
        }
        // One flat buffer: every A and B gradient (modules in sorted order), then the NLL as two floats (high and low
        // parts, so the sum keeps about 48 bits), then the stop flag.
        let keys = grads.orderedKeys
        var flat: [Float] = []
        flat.reserveCapacity(keys.reduce(3) { $0 + grads[$1.module, $1.which].count })
        for k in keys { flat += grads[k.module, k.which] }
        let hi = Float(nll)
        flat.append(hi)
        flat.append(Float(nll - Double(hi)))
        flat.append(stopRequested() ? 1 : 0)
        try w.sum(&flat)
        var o = 0
        for k in keys {
            let n = grads[k.module, k.which].count
            grads[k.module, k.which] = Array(flat[o..<(o + n)])
            o += n
        }
        stopAgreed = flat[o + 2] > 0
        let nllAll = Double(flat[o]) + Double(flat[o + 1])
        let loss = scored > 0 ? nllAll / Double(scored) : 0
        return (loss, try applyUpdate(loss: loss, grads: grads, step: step, lr: lr, checkpoint: checkpoint), tokens)
    }

    /// The end of every optimizer step, one process or many: a non-finite loss or gradient norm stops training
    /// (naming the step and the last good checkpoint); else clip the gradients and apply AdamW. Returns the norm.
    func applyUpdate(loss: Double, grads: LoRAGradients, step: Int, lr: Double, checkpoint: String?) throws -> Float {
        var loss = loss
        if Trainer.nanAtStep == step { loss = .nan }  // test hook (LORA_TEST_NAN_AT_STEP)
        if !loss.isFinite { throw TrainError.nonFinite(step: step, what: "the loss", checkpoint: checkpoint) }
        let norm = AdamW.clipGradNorm(grads, maxNorm: options.maxGradNorm)
        if !norm.isFinite { throw TrainError.nonFinite(step: step, what: "the gradient norm", checkpoint: checkpoint) }
        AdamW.step(model: model, grads: grads, state: optimizer, lr: lr, config: options.adam, loraplusLrRatio: options.loraplusLrRatio)
        return norm
    }

    /// Runs until the last step (or a stop request). Returns true when training finished.
    public func run() throws -> Bool {
        let total = totalSteps
        let warmup = self.warmup  // both count an epoch's batches: once per run, not per step
        let grads = LoRAGradients(for: model.lora)
        let started = Date()
        let elapsedBefore = state.elapsedSeconds
        var windowTokens = 0
        var windowStart = Date()
        var epoch = state.epoch
        while state.step < total {
            let batches = Batching.epoch(examples, epoch: epoch, seed: options.seed, batchSize: globalMicroBatch,
                                         seqLen: options.seqLen, packing: options.packing)
            if batches.isEmpty { throw TrainError.noExamples(reason: "the data gives no batch") }
            var bi = epoch == state.epoch ? state.batchInEpoch : 0
            while bi < batches.count && state.step < total {
                let group = Array(batches[bi..<min(batches.count, bi + options.gradAccum)])
                if let ms = Trainer.stepSleep { usleep(ms * 1000) }
                let lr = options.adam.lr * options.schedule.factor(step: state.step, warmup: warmup, total: total)
                let (loss, norm, tokens) = try optimizerStep(group, grads: grads, lr: lr, step: state.step + 1,
                                                             dropout: options.dropout, checkpoint: lastCheckpoint)
                state.step += 1
                bi += group.count
                state.epoch = epoch
                state.batchInEpoch = bi
                state.tokensSeen += tokens
                state.lastLoss = loss
                state.elapsedSeconds = elapsedBefore + Date().timeIntervalSince(started)
                windowTokens += tokens
                onProgress(state.step, total)
                let isLast = state.step == total
                var validLoss: Double? = nil
                if isLast || (options.evalEvery > 0 && state.step % options.evalEvery == 0) { validLoss = try validationLoss() }
                if state.step % max(1, options.logEvery) == 0 || isLast || validLoss != nil {
                    let dt = Date().timeIntervalSince(windowStart)
                    history.append(LogPoint(step: state.step, loss: loss, lr: lr, validLoss: validLoss))
                    onStep(StepReport(step: state.step, totalSteps: total,
                                      epoch: Double(epoch) + Double(bi) / Double(batches.count), loss: loss, lr: lr,
                                      gradNorm: Double(norm), tokens: state.tokensSeen,
                                      tokensPerSecond: dt > 0 ? Double(windowTokens) / dt : 0, elapsed: state.elapsedSeconds,
                                      validLoss: validLoss))
                    windowTokens = 0
                    windowStart = Date()
                }
                if options.saveEvery > 0 && state.step % options.saveEvery == 0 && !isLast { try checkpoint() }
                // Data-parallel: the stop request rode in this step's reduction, so every rank stops at the same step.
                let stop = ranks > 1 ? stopAgreed : stopRequested()
                if stop && !isLast {
                    try checkpoint()
                    return false
                }
            }
            if bi >= batches.count {
                epoch += 1
                state.epoch = epoch
                state.batchInEpoch = 0
            }
        }
        try checkRanksAgree()
        return true
    }
}
