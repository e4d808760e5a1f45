// Defaults: every default of the tools' options, defined once. The options structs (TrainOptions, AdamWConfig,
// SanityOptions), the flags of lora-init / lora-train / lora-eval and the run config table (LoRACLI's RunConfig,
// which pipelines/run.example.yaml shows) all read them; the Makefile and the cron wrapper set none of their own.
/// The defaults of every tool, defined once.
public enum Defaults {
    // lora-init
    public static let rank = 16
    /// lora_alpha: 2 × rank when not given.
    public static func alpha(rank: Int) -> Double { Double(2 * rank) }
    public static let dropout = 0.05
    public static let targets = "q_proj,k_proj,v_proj,o_proj"
    /// The same attention Linears in a model that fuses q/k/v (phi3).
    public static let fusedTargets = "qkv_proj,o_proj"
    // lora-train
    public static let seqLen = 512
    public static let batchSize = 4
    public static let gradAccum = 1
    public static let epochs = 1
    public static let lr = 2e-4
    public static let lrSchedule = "linear"
    public static let warmupRatio = 0.0
    public static let weightDecay = 0.0
    public static let adamBeta1 = 0.9
    public static let adamBeta2 = 0.999
    public static let adamEps = 1e-8
    /// LoRA+: lora_B's learning rate is this × lr (1: plain LoRA).
    public static let loraplusLrRatio = 1.0
    public static let maxGradNorm = 1.0
    public static let logEvery = 10
    public static let evalEvery = 0
    public static let saveEvery = 50
    public static let keepLast = 3
    public static let sanitySteps = 100
    public static let sanityExamples = 8
    // lora-eval
    public static let evalBatchSize = 4
    /// lora-eval's --seq-len: the model's context, at most this.
    public static let evalMaxSeqLen = 2048
    // all
    public static let seed = 0
}
