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
        let scale = Float(bitPattern: UInt32(bitPattern: (Int32(fx) &+ 127) &<< 23))
        // Below the clamp the true value underflows: 0, as libm.
        return xIn < -87.3 ? 0 : y * scale
    }

    /// In-place x[i] = exp(x[i] - shift) over n floats, returning their sum.
    @inline(__always)
    public static func expShiftSum(_ x: UnsafeMutablePointer<Float>, _ n: Int, shift: Float) -> Float {
        for i in 0..<n { x[i] = exp(x[i] - shift) }  // a pure map: vectorized
        return sum(x, n)
    }

    /// In-place x[i] = exp(x[i] - shift), returning their sum accumulated in Double (for log-sum-exp over a
    /// vocabulary, where a float32 sum of ~50k terms biases the loss by ~1e-5 relative).
    @inline(__always)
    public static func expShiftSumPrecise(_ x: UnsafeMutablePointer<Float>, _ n: Int, shift: Float) -> Double {
        for i in 0..<n { x[i] = exp(x[i] - shift) }
        var acc = SIMD4<Double>(repeating: 0)
        var i = 0
        while i + 4 <= n {
            acc += SIMD4<Double>(Double(x[i]), Double(x[i + 1]), Double(x[i + 2]), Double(x[i + 3]))
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
        while i + 8 <= n { acc = pointwiseMax(acc, load8(x + i)); i += 8 }
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
