// RoPE: cos/sin tables for rotary position embedding as transformers computes them (inv_freq[j] = θ^(−2j/d),
// with "linear" scaling dividing positions' frequencies by factor, "llama3" scaling by wavelength bands and
// "longrope" (phi3) dividing by per-frequency short or long factors and scaling cos/sin by attention_factor). d is
// the rotary dimension: the head dimension, or its leading part under phi3's partial_rotary_factor.
import Foundation

public struct RopeTables {
    /// The rotated dimensions of each head (pairs j, j + rotaryDim/2).
    public let rotaryDim: Int
    public let positions: Int
    /// longrope: whether these are the long factors' tables.
    public let long: Bool
    public let cos: [Float]   // [positions, rotaryDim/2]
    public let sin: [Float]

    /// longrope picks the long factors when the pass reaches past the original context: transformers'
    /// longrope_frequency_update, max(position_ids) + 1 > original_max_position_embeddings.
    public static func wantsLong(_ c: ModelConfig, maxPosition: Int) -> Bool {
        guard let s = c.ropeScaling, s.type == "longrope" else { return false }
        return maxPosition + 1 > s.originalMaxPositionEmbeddings
    }

    public static func inverseFrequencies(_ c: ModelConfig, long: Bool = false) -> [Double] {
        let d = c.rotaryDim
        // transformers computes inv_freq in float32: 1 / θ^(arange(0, d, 2) / d).
        var inv = (0..<(d / 2)).map { j -> Double in
            let e = Float(2 * j) / Float(d)
            return Double(1 / Float(pow(c.ropeTheta, Double(e))))
        }
        if let s = c.ropeScaling {
            switch s.type {
            case "linear":
                inv = inv.map { $0 / s.factor }
            case "longrope":
                // 1 / (ext · θ^(2j/d)) in float32, ext the short or long factors.
                let ext = long ? s.longFactor : s.shortFactor
                inv = (0..<(d / 2)).map { j in
                    let e = Float(2 * j) / Float(d)
                    return Double(1 / (Float(ext[j]) * Float(pow(c.ropeTheta, Double(e)))))
                }
            case "llama3":
                let old = Double(s.originalMaxPositionEmbeddings)
                let lowWavelen = old / s.lowFreqFactor
                let highWavelen = old / s.highFreqFactor
                inv = inv.map { f in
                    let wavelen = 2 * Double.pi / f
                    if wavelen > lowWavelen { return f / s.factor }
                    if wavelen < highWavelen { return f }
                    let smooth = (old / wavelen - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor)
                    return (1 - smooth) * f / s.factor + smooth * f
                }
            default:
                break
            }
        }
        return inv
    }

    public init(config: ModelConfig, positions: Int, long: Bool = false) {
        rotaryDim = config.rotaryDim
        self.positions = positions
        self.long = long
        let inv = RopeTables.inverseFrequencies(config, long: long).map { Float($0) }
        let scale = Float(config.ropeScaling?.type == "longrope" ? config.ropeScaling!.attentionFactor : 1)
        let half = rotaryDim / 2
        var c = [Float](repeating: 0, count: positions * half)
        var s = [Float](repeating: 0, count: positions * half)
        for p in 0..<positions {
            for j in 0..<half {
                // float32 angle as torch's (position · inv_freq), then cos/sin.
                let angle = Float(p) * inv[j]
                c[p * half + j] = Float(Foundation_cos(Double(angle))) * scale
                s[p * half + j] = Float(Foundation_sin(Double(angle))) * scale
            }
        }
        cos = c
        sin = s
    }
}
