// Run: the entry point every executable uses: parse flags, run, and turn any failure into one line
// `error: …` on stderr with a non-zero exit (64 for bad flags, 1 otherwise); results go to stdout as JSON.
import ArgumentParser
import Foundation
import LoRAShared

/// The exit codes of every lora-* tool (sysexits.h where one fits).
public enum ExitCode32 {
    public static let failure: Int32 = 1     // bad input or a runtime failure: `error: what, where; fix`
    public static let usage: Int32 = 64      // EX_USAGE: a bad flag, flag value or config key
    public static let tempFail: Int32 = 75   // EX_TEMPFAIL: another run holds the lock; nothing was done
    // 128 + signal (130 SIGINT, 143 SIGTERM): interrupted, see installInterruptCleanup.
}

/// Another process holds the lock of an output this run would write (exit 75: try again later).
public struct LockHeldError: Error, CustomStringConvertible {
    public let description: String
    public init(_ message: String) { description = message }
}

/// What a failure exits with and the one line it prints after `error: `.
func classify<C: ParsableCommand>(_ error: Error, _ type: C.Type) -> (code: Int32, message: String, usage: Bool) {
    if let e = error as? LockHeldError { return (ExitCode32.tempFail, e.description, false) }
    if let e = error as? UsageError { return (ExitCode32.usage, e.description, true) }
    if isLibraryError(error) { return (ExitCode32.failure, "\(error)", false) }
    // ArgumentParser's own errors (unknown flag, bad value, ValidationError) map to 64; anything else that
    // reaches here is a runtime failure from Foundation or the system (a full disk, a vanished file).
    if type.exitCode(for: error).rawValue == ExitCode32.usage { return (ExitCode32.usage, type.message(for: error), true) }
    let ns = error as NSError
    var message = ns.localizedDescription
    if let path = ns.userInfo[NSFilePathErrorKey] as? String ?? (ns.userInfo[NSURLErrorKey] as? URL)?.path, !message.contains(path) {
        message = "\(path): \(message)"
    }
    if let u = ns.userInfo[NSUnderlyingErrorKey] as? NSError, u.domain == NSPOSIXErrorDomain {
        message += " (\(String(cString: strerror(Int32(u.code)))))"
    }
    return (ExitCode32.failure, message, false)
}

/// Runs a command the way every lora-* tool does.
public func runMain<C: ParsableCommand>(_ type: C.Type) -> Never {
    setvbuf(stdout, nil, _IOFBF, 1 << 16)
    installInterruptCleanup()
    do {
        var command = try type.parseAsRoot()
        try command.run()
        fflush(stdout)
        ProcessGroup.finish?()
        exit(0)
    } catch {
        fflush(stdout)
        let code = type.exitCode(for: error)
        if code == .success {
            type.exit(withError: error)  // --help, --version
        }
        if let e = error as? ExitCode { exit(e.rawValue) }
        let (status, raw, isUsage) = classify(error, type)
        var message = raw.replacingOccurrences(of: "\n", with: " ").trimmingCharacters(in: .whitespaces)
        if message.lowercased().hasPrefix("error: ") { message = String(message.dropFirst(7)) }
        FileHandle.standardError.write(Data("error: \(ProcessGroup.label)\(message)\(isUsage && !message.contains("--help") ? " (see --help)" : "")\n".utf8))
        PendingOutputs.shared.removeAll()
        if let abort = ProcessGroup.abort {
            Interrupt.graceful = false  // the launcher's SIGTERM to the aborting job ends this rank at once
            abort(status)
        }
        exit(status)
    }
}

/// A tool running as one of several MPI ranks (see MPIWorld.install): its errors name the rank and abort the job,
/// and a normal exit finalizes MPI. Unset for a single process.
public enum ProcessGroup {
    nonisolated(unsafe) public static var label = ""
    nonisolated(unsafe) public static var abort: ((Int32) -> Void)? = nil
    nonisolated(unsafe) public static var finish: (() -> Void)? = nil
}

/// On SIGINT/SIGTERM, remove temporary outputs in progress and exit 130/143 (128 + signal), so an
/// interrupted run leaves neither a half-written file nor a hidden temporary folder. A tool that can stop
/// cleanly (lora-train) sets `Interrupt.graceful`: the first signal is then only recorded, a second one exits.
public enum Interrupt {
    nonisolated(unsafe) public static var graceful = false
    nonisolated(unsafe) public static var received: Int32 = 0
}

nonisolated(unsafe) private var signalSources: [DispatchSourceSignal] = []

func installInterruptCleanup() {
    for sig in [SIGINT, SIGTERM] {
        signal(sig, SIG_IGN)
        let src = DispatchSource.makeSignalSource(signal: sig, queue: .global())
        src.setEventHandler {
            if Interrupt.graceful && Interrupt.received == 0 {
                Interrupt.received = sig
                FileHandle.standardError.write(Data("lora: signal \(sig): finishing this step and writing a checkpoint (send again to abort)\n".utf8))
                return
            }
            PendingOutputs.shared.removeAll()
            FileHandle.standardError.write(Data("error: interrupted by signal \(sig); partial outputs removed\n".utf8))
            exit(128 + sig)
        }
        src.resume()
        signalSources.append(src)
    }
}

func isLibraryError(_ e: Error) -> Bool { e is ToolError }

/// Writes one JSON value as a line on stdout.
public func emitJSON(_ v: JSONValue) {
    print(v.serialized(.python))
    fflush(stdout)
}

/// Logs to stderr (never stdout: stdout carries results).
public enum Log {
    nonisolated(unsafe) public static var quiet = false
    public static func info(_ s: String) {
        if !quiet { FileHandle.standardError.write(Data((s + "\n").utf8)) }
    }
    public static func warn(_ s: String) {
        FileHandle.standardError.write(Data(("warning: " + s + "\n").utf8))
    }
}
