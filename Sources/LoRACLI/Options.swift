// Options: flag groups shared by several executables, so each flag is spelled and documented once.
import ArgumentParser
import LoRAShared

public struct CommonOptions: ParsableArguments {
    @Option(name: .customLong("seed"), help: "Seed for every random choice; the same inputs and seed give the same bytes. [default: 0]")
    public var seedFlag: UInt64?

    /// The seed: the flag, else 0 (lora-train also reads its config file's `seed`).
    public var seed: UInt64 { seedFlag ?? 0 }

    @Option(help: "Threads for BLAS, oneDNN and our own kernels alike (0: one per core). [default: 0]")
    public var threads: Int?

    @Flag(name: .shortAndLong, help: "No progress or log lines on stderr (errors still print).")
    public var quiet = false

    public init() {}

    public func validate() throws {
        if let t = threads, !(0...Limits.maxThreads).contains(t) { throw ValidationError("--threads must be in 0...\(Limits.maxThreads)") }
    }

    /// Applies --quiet and the threads: the flag, else the run config's compute.threads, else one per core.
    public func apply(_ cfg: ConfigFile? = nil) throws {
        Log.quiet = quiet
        var n = threads ?? 0
        if threads == nil, let c = cfg, let t = try c.int("threads") {
            guard (0...Limits.maxThreads).contains(t) else { throw UsageError("\(c.path): 'compute.threads' must be in 0...\(Limits.maxThreads)") }
            n = t
        }
        setBLASThreads(n)
        if n > 0 {
            Parallel.cores = n
            OneDNN.setThreads(n)
        }
    }

    /// --seed, else the run config's seed, else the default.
    public func seed(_ cfg: ConfigFile?) throws -> UInt64 {
        if let s = seedFlag { return s }
        guard let c = cfg, let s = try c.int("seed") else { return UInt64(Defaults.seed) }
        guard s >= 0 else { throw UsageError("\(c.path): 'seed' must be a non-negative integer") }
        return UInt64(s)
    }
}

extension ComputeDTypeRequest: ExpressibleByArgument {}

/// `--compute-dtype` of the tools that run the model (lora-eval, lora-train, lora-generate).
public struct ComputeOptions: ParsableArguments {
    @Option(name: .customLong("compute-dtype"), help: "Arithmetic of the frozen-weight matrix products: auto (bf16 where the CPU has AVX512-BF16 or AMX-BF16, else f32), bf16 or f32. [default: auto]")
    public var computeDType: ComputeDTypeRequest?

    public init() {}

    /// The flag, else the config file's `compute-dtype`, else auto; resolved against this CPU.
    public func resolve(_ cfg: ConfigFile? = nil) throws -> ComputeChoice {
        var req = computeDType
        if let c = cfg, let s = try c.string("compute-dtype"), req == nil {
            guard let r = ComputeDTypeRequest(rawValue: s) else {
                throw UsageError("\(c.path): compute-dtype must be auto, bf16 or f32 (got '\(s)')")
            }
            req = r
        }
        let choice = try ComputeChoice.resolve(req ?? .auto)
        if choice.backend == .emulated { Log.info("compute dtype bf16, emulated (LORA_BF16_EMULATE): bf16 products at fp32 speed") }
        if choice.dtype == .bf16 && choice.backend == .onednn {
            // oneDNN carries the frozen products on every core; what is left to OpenBLAS (LoRA's rank-r products) is
            // small, and its worker threads, spinning between calls, take the cores from oneDNN's: on 2 cores a
            // QLoRA step of the Llama-3.2-1B shape ran 22% faster with OpenBLAS on the calling thread alone.
            setBLASThreads(1)
        }
        return choice
    }
}

extension QuantType: ExpressibleByArgument {}
extension LoRAInit: ExpressibleByArgument {}
extension LRSchedule: ExpressibleByArgument {}

/// Parses "5GB", "500MB", "2GiB" or a byte count.
public struct ByteSize: ExpressibleByArgument, Sendable {
    public let bytes: Int
    public init?(argument: String) {
        guard let b = ShardedWriter.parseSize(argument) else { return nil }
        bytes = b
    }
    public init(bytes: Int) { self.bytes = bytes }
    public var defaultValueDescription: String { "\(bytes)" }
}
