// FastMath: exp for float32 (Cephes-style: x = n·ln2 + r, degree-6 polynomial, 2^n from exponent bits),
// relative error below 2e-7 on [-87, 88], written as branch-free scalar code over arrays so the compiler
// vectorizes the loops; used by softmax, SiLU and cross-entropy where libm calls would dominate.

public enum FastMath {
    @inline(__always)
    public static func exp(_ xIn: Float) -> Float {
        let x = Swift.min(Swift.max(xIn, -87.3), 88.7)
        let fx = (x * 1.442_695_040_888_963_4 + 0.5).rounded(.down)
        var r = x - fx * 0.693_359_375
        r = r - fx * -2.121_944_4e-4
        var p: Float = 1.987_569_15e-4
        p = p * r + 1.398_199_950_7e-3
        p = p * r + 8.333_451_907_3e-3
        p = p * r + 4.166_579_589_4e-2
        p = p * r + 1.666_666_545_9e-1
        p = p * r + 5.000_000_120_1e-1
        let y = p * (r * r) + r + 1
        // Int32(fx) without the trap on NaN (a NaN input then gives NaN, as libm, instead of a crash): fx is an
        // integer in [-126, 128] for every other input, which the round-by-magic-number recovers exactly.
        let n = Int32(bitPattern: (fx + 12_582_912).bitPattern & 0x7F_FFFF) &- 0x40_0000
        let scale = Float(bitPattern: UInt32(bitPattern: (n &+ 127) &<< 23))
        // Below the clamp the true value underflows: 0, as libm.
        return xIn < -87.3 ? 0 : y * scale
    }

    /// `exp` on 8 lanes: the same arithmetic in the same order, so each lane equals the scalar result bit for
    /// bit. Written with SSE2-friendly operations only (the floor as a round-by-magic-number and a correction,
    /// masks instead of pointwiseMin/Max, which are not inlined), so it vectorizes on the baseline x86-64 target.
    @inline(__always)
    public static func exp(_ xIn: SIMD8<Float>) -> SIMD8<Float> {
        let lo = SIMD8<Float>(repeating: -87.3), hi = SIMD8<Float>(repeating: 88.7)
        var x = xIn.replacing(with: lo, where: xIn .< lo)
        x = x.replacing(with: hi, where: x .> hi)
        let t = x * 1.442_695_040_888_963_4 + 0.5
        let magic = SIMD8<Float>(repeating: 12_582_912)  // 1.5·2²³: adding and subtracting rounds to an integer
        var fx = (t + magic) - magic
        fx = fx - SIMD8<Float>(repeating: 0).replacing(with: 1, where: fx .> t)  // floor(t)
        var r = x - fx * 0.693_359_375
        r = r - fx * -2.121_944_4e-4
        var p = SIMD8<Float>(repeating: 1.987_569_15e-4)
        p = p * r + 1.398_199_950_7e-3
        p = p * r + 8.333_451_907_3e-3
        p = p * r + 4.166_579_589_4e-2
        p = p * r + 1.666_666_545_9e-1
        p = p * r + 5.000_000_120_1e-1
        let y = p * (r * r) + r + 1
        let n = (unsafeBitCast(fx + magic, to: SIMD8<Int32>.self) & 0x7F_FFFF) &- 0x40_0000  // Int32(fx)
        let scale = unsafeBitCast((n &+ 127) &* 8_388_608, to: SIMD8<Float>.self)  // 2^fx
        return (y * scale).replacing(with: 0, where: xIn .< lo)
    }

    /// tanh(x) = 1 − 2 / (exp(2x) + 1): absolute error about 1e-7 (gemma's GeGLU and soft-capping).
    @inline(__always)
    public static func tanh(_ x: Float) -> Float { 1 - 2 / (exp(2 * x) + 1) }

    @inline(__always)
    public static func tanh(_ x: SIMD8<Float>) -> SIMD8<Float> { 1 - 2 / (exp(2 * x) + 1) }

    /// In-place x[i] = exp(x[i] - shift) over n floats (8 lanes at a time).
    @inline(__always)
    static func expShift(_ x: UnsafeMutablePointer<Float>, _ n: Int, shift: Float) {
        var i = 0
        let sh = SIMD8<Float>(repeating: shift)
        while i + 8 <= n {
            UnsafeMutableRawPointer(x + i).storeBytes(of: exp(load8(x + i) - sh), as: SIMD8<Float>.self)
            i += 8
        }
        while i < n { x[i] = exp(x[i] - shift); i += 1 }
    }

    /// In-place x[i] = exp(x[i] - shift) over n floats, returning their sum.
    @inline(__always)
    public static func expShiftSum(_ x: UnsafeMutablePointer<Float>, _ n: Int, shift: Float) -> Float {
        expShift(x, n, shift: shift)
        return sum(x, n)
    }

    /// In-place x[i] = exp(x[i] - shift), returning their sum accumulated in Double (for log-sum-exp over a
    /// vocabulary, where a float32 sum of ~50k terms biases the loss by ~1e-5 relative).
    @inline(__always)
    public static func expShiftSumPrecise(_ x: UnsafeMutablePointer<Float>, _ n: Int, shift: Float) -> Double {
        expShift(x, n, shift: shift)
        var acc = SIMD4<Double>(repeating: 0)
        var i = 0
        while i + 4 <= n {
            let v = UnsafeRawPointer(x + i).loadUnaligned(as: SIMD4<Float>.self)
            acc += SIMD4<Double>(Double(v[0]), Double(v[1]), Double(v[2]), Double(v[3]))
            i += 4
        }
        var s = acc.sum()
        while i < n { s += Double(x[i]); i += 1 }
        return s
    }

    /// Sum with 8 lanes (explicit, since float reductions are not reassociated by the compiler).
    @inline(__always)
    public static func sum(_ x: UnsafePointer<Float>, _ n: Int) -> Float {
        var acc = SIMD8<Float>(repeating: 0)
        var i = 0
        while i + 8 <= n { acc += load8(x + i); i += 8 }
        var s = acc.sum()
        while i < n { s += x[i]; i += 1 }
        return s
    }

    @inline(__always)
    public static func max(_ x: UnsafePointer<Float>, _ n: Int) -> Float {
        var acc = SIMD8<Float>(repeating: -.infinity)
        var i = 0
        while i + 8 <= n { let v = load8(x + i); acc = acc.replacing(with: v, where: v .> acc); i += 8 }
        var m = acc.max()
        while i < n { m = Swift.max(m, x[i]); i += 1 }
        return m
    }
}

@inline(__always) public func load8(_ p: UnsafePointer<Float>) -> SIMD8<Float> {
    UnsafeRawPointer(p).loadUnaligned(as: SIMD8<Float>.self)
}
@inline(__always) public func load8(_ p: UnsafeMutablePointer<Float>) -> SIMD8<Float> {
    UnsafeRawPointer(p).loadUnaligned(as: SIMD8<Float>.self)
}

@inline(__always) func Glibc_logf(_ x: Float) -> Float { logf(x) }
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
