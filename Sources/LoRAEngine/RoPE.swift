// RoPE: cos/sin tables for rotary position embedding as transformers computes them (inv_freq[j] = θ^(−2j/d),
// with "linear" scaling dividing positions' frequencies by factor and "llama3" scaling by wavelength bands).
import Foundation

public struct RopeTables {
    public let headDim: Int
    public let positions: Int
    public let cos: [Float]   // [positions, headDim/2]
    public let sin: [Float]

    public static func inverseFrequencies(_ c: ModelConfig) -> [Double] {
        let d = c.headDim
        // transformers computes inv_freq in float32: 1 / θ^(arange(0, d, 2) / d).
        var inv = (0..<(d / 2)).map { j -> Double in
            let e = Float(2 * j) / Float(d)
            return Double(1 / Float(pow(c.ropeTheta, Double(e))))
        }
        if let s = c.ropeScaling {
            switch s.type {
            case "linear":
                inv = inv.map { $0 / s.factor }
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

    public init(config: ModelConfig, positions: Int) {
        headDim = config.headDim
        self.positions = positions
        let inv = RopeTables.inverseFrequencies(config).map { Float($0) }
        let half = headDim / 2
        var c = [Float](repeating: 0, count: positions * half)
        var s = [Float](repeating: 0, count: positions * half)
        for p in 0..<positions {
            for j in 0..<half {
                // float32 angle as torch's (position · inv_freq), then cos/sin.
                let angle = Float(p) * inv[j]
                c[p * half + j] = Float(Foundation_cos(Double(angle)))
                s[p * half + j] = Float(Foundation_sin(Double(angle)))
            }
        }
        cos = c
        sin = s
    }
}
