// MPI: lora-train's ranks when launched by mpirun or srun. The launcher is recognized from its environment
// (Open MPI: OMPI_COMM_WORLD_SIZE; MPICH/Hydra and srun --mpi=pmi2: PMI_SIZE; PMIx: PMIX_RANK; a bare srun:
// SLURM_STEP_NUM_TASKS); only then is libmpi loaded (dlopen, see CMPI), so a single process, and every build,
// needs no MPI installed. One process (-np 1) runs as if launched alone.
import CMPI
import Foundation
import LoRAShared

public struct MPIError: Error, CustomStringConvertible, ToolError {
    public let description: String
    public init(_ d: String) { description = d }
}

public final class MPIWorld: Collective {
    public let rank: Int
    public let size: Int
    public let library: String

    init(rank: Int, size: Int, library: String) {
        self.rank = rank
        self.size = size
        self.library = library
    }

    /// The launcher and the world size its environment announces, or nil when no launcher started this process.
    public static func launcher(_ env: [String: String] = ProcessInfo.processInfo.environment) -> (name: String, size: Int?)? {
        if let s = env["OMPI_COMM_WORLD_SIZE"] { return ("mpirun (Open MPI)", Int(s)) }
        if let s = env["PMI_SIZE"] { return (env["SLURM_STEP_ID"] != nil ? "srun" : "mpirun (MPICH)", Int(s)) }
        let slurm = env["SLURM_STEP_NUM_TASKS"].flatMap(Int.init)
        if env["PMIX_RANK"] != nil { return (env["SLURM_STEP_ID"] != nil ? "srun" : "a PMIx launcher", slurm) }
        // srun without an MPI plugin (SLURM_STEP_* is set for job steps, not in the batch script itself).
        if env["SLURM_STEP_ID"] != nil, let n = slurm, n > 1 { return ("srun", n) }
        return nil
    }

    /// The ranks this process belongs to: nil for a single process (no launcher, or one rank), which touches no
    /// MPI. Throws a one-line error when launched by mpirun/srun but no libmpi loads (LORA_MPI_LIB names one).
    public static func fromEnvironment() throws -> MPIWorld? {
        let env = ProcessInfo.processInfo.environment
        guard let (name, announced) = launcher(env) else { return nil }
        if announced == 1 { return nil }
        var err = [CChar](repeating: 0, count: 2048)
        let path = env["LORA_MPI_LIB"]
        if lp_mpi_init(path, &err, err.count) != 0 {
            let why = String(decoding: err.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            throw MPIError("launched by \(name) but MPI is unavailable: \(why); install the MPI that launched it (Debian: apt-get install libopenmpi3 openmpi-bin) or name its libmpi.so with LORA_MPI_LIB")
        }
        let w = MPIWorld(rank: Int(lp_mpi_rank()), size: Int(lp_mpi_size()),
                         library: String(cString: lp_mpi_library()) + { let v = String(cString: lp_mpi_version()); return v.isEmpty ? "" : " (\(v))" }())
        if let n = announced, n != w.size {
            throw MPIError("\(name) started \(n) processes but \(w.library) sees \(w.size): the launcher and libmpi do not match; use the mpirun of the same MPI, or srun --mpi=pmix (or pmi2)")
        }
        return w
    }

    func check(_ rc: Int32, _ what: String) throws {
        if rc != 0 { throw MPIError("rank \(rank): MPI_Allreduce (\(what)) failed with MPI error \(rc); a rank or the network failed, resume from the last checkpoint") }
    }

    /// One MPI_Allreduce of `x` (elements of MPI type `type`) with `op`, the result in `x` on every rank.
    private func allreduce<T>(_ x: inout [T], type: Int32, op: Int32, _ what: String) throws {
        guard !x.isEmpty else { return }
        let input = x
        let rc = input.withUnsafeBytes { i in x.withUnsafeMutableBytes { o in
            lp_mpi_allreduce(i.baseAddress, o.baseAddress, Int32(input.count), type, op) } }
        try check(rc, "\(what) of \(input.count) \(T.self == Float.self ? "floats" : "doubles")")
    }

    public func sum(_ x: inout [Float]) throws { try allreduce(&x, type: Int32(LP_MPI_FLOAT), op: Int32(LP_MPI_SUM), "sum") }
    public func sum(_ x: inout [Double]) throws { try allreduce(&x, type: Int32(LP_MPI_DOUBLE), op: Int32(LP_MPI_SUM), "sum") }
    public func max(_ x: inout [Double]) throws { try allreduce(&x, type: Int32(LP_MPI_DOUBLE), op: Int32(LP_MPI_MAX), "max") }

    /// Makes this process a rank of the tool: errors are labelled with the rank and abort the whole job (so no
    /// rank waits forever in a reduction), a normal exit finalizes MPI; ranks other than 0 log only warnings.
    public func install() {
        ProcessGroup.label = "rank \(rank) of \(size): "
        ProcessGroup.abort = { code in lp_mpi_abort(code) }
        ProcessGroup.finish = { _ = lp_mpi_finalize() }
        if rank != 0 { Log.quiet = true }
        // Open MPI's mpirun forwards SIGUSR1 to every rank (its own SIGTERM ends the job instead): a graceful stop
        // request like SIGTERM to a rank. Any rank's request reaches all through the next step's reduction.
        signal(SIGUSR1, SIG_IGN)
        let src = DispatchSource.makeSignalSource(signal: SIGUSR1, queue: .global())
        src.setEventHandler {
            guard Interrupt.graceful, Interrupt.received == 0 else { return }
            Interrupt.received = SIGTERM
            FileHandle.standardError.write(Data("lora: \(ProcessGroup.label)SIGUSR1: finishing this step and writing a checkpoint\n".utf8))
        }
        src.resume()
        MPIWorld.usr1 = src
    }

    nonisolated(unsafe) static var usr1: DispatchSourceSignal?
}
