// MathShim: libm entry points under private names so the kernels do not need Foundation in every file.
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

public func Foundation_log(_ x: Double) -> Double { log(x) }
public func Foundation_cos(_ x: Double) -> Double { cos(x) }


/// A minimal lock for reductions in parallel loops.
final class NSLockShim: @unchecked Sendable {
    private var m = pthread_mutex_t()
    init() { pthread_mutex_init(&m, nil) }
    deinit { pthread_mutex_destroy(&m) }
    func locked(_ f: () -> Void) { pthread_mutex_lock(&m); f(); pthread_mutex_unlock(&m) }
}
public func Foundation_sin(_ x: Double) -> Double { sin(x) }
public func Foundation_exp(_ x: Double) -> Double { exp(x) }
