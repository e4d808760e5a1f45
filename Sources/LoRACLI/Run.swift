// Run: the entry point every executable uses: parse flags, run, and turn any failure into one line
// `error: …` on stderr with a non-zero exit (64 for bad flags, 1 otherwise); results go to stdout as JSON.
import ArgumentParser
import Foundation
import LoRAShared

public enum ExitCode32 {
    public static let failure: Int32 = 1
    public static let usage: Int32 = 64
}

/// Runs a command the way every lora-* tool does.
public func runMain<C: ParsableCommand>(_ type: C.Type) -> Never {
    setvbuf(stdout, nil, _IOFBF, 1 << 16)
    installInterruptCleanup()
    do {
        var command = try type.parseAsRoot()
        try command.run()
        fflush(stdout)
        exit(0)
    } catch {
        fflush(stdout)
        let code = type.exitCode(for: error)
        if code == .success {
            type.exit(withError: error)  // --help, --version
        }
        if error is ExitCode {
            exit((error as! ExitCode).rawValue)
        }
        let isUsage = !isLibraryError(error)
        var message: String
        if isLibraryError(error) {
            message = "\(error)"
        } else {
            message = type.message(for: error)
        }
        message = message.replacingOccurrences(of: "\n", with: " ").trimmingCharacters(in: .whitespaces)
        if message.lowercased().hasPrefix("error: ") { message = String(message.dropFirst(7)) }
        FileHandle.standardError.write(Data("error: \(message)\(isUsage ? " (see --help)" : "")\n".utf8))
        exit(isUsage ? ExitCode32.usage : ExitCode32.failure)
    }
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
