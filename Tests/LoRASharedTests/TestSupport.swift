// TestSupport: fixture paths, temporary folders, running the built executables as a user would, and
// comparison helpers that report the largest difference when they fail.
import Foundation
import XCTest
@testable import LoRAShared
@testable import LoRAModel
@testable import LoRAEngine
@testable import LoRATrain
@testable import LoRATokenizer

enum Fixtures {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures").path
    static func path(_ rel: String) -> String { root + "/" + rel }
}

func makeTempDir(_ tag: String = "t") -> String {
    let p = NSTemporaryDirectory() + "lora-tests-\(tag)-\(getpid())-\(UUID().uuidString.prefix(8))"
    try! FileManager.default.createDirectory(atPath: p, withIntermediateDirectories: true)
    return p
}

/// Folder of the built products (the test bundle sits beside the executables).
let productsDir: String = {
    var url = Bundle.main.bundleURL
    if url.pathExtension == "xctest" { url.deleteLastPathComponent() }
    let candidates = [url.path, URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().path,
                      URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path + "/.build/debug"]
    return candidates.first { FileManager.default.fileExists(atPath: $0 + "/lora-quantize") } ?? candidates[0]
}()

struct RunResult {
    var status: Int32
    var stdout: String
    var stderr: String
    var stdoutData: Data
}

/// Runs a built executable with arguments, optional stdin bytes; never hangs past `timeout` seconds.
@discardableResult
func runTool(_ name: String, _ args: [String], stdin: Data? = nil, env: [String: String] = [:], timeout: TimeInterval = 300) throws -> RunResult {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: name.hasPrefix("/") ? name : productsDir + "/" + name)  // a tool, or an absolute path
    p.arguments = args
    if !env.isEmpty { p.environment = ProcessInfo.processInfo.environment.merging(env) { $1 } }
    let out = Pipe(), err = Pipe()
    p.standardOutput = out
    p.standardError = err
    let inPipe = Pipe()
    p.standardInput = stdin == nil ? FileHandle.nullDevice : inPipe
    try p.run()
    if let s = stdin {
        DispatchQueue.global().async {
            inPipe.fileHandleForWriting.write(s)
            try? inPipe.fileHandleForWriting.close()
        }
    }
    final class Box: @unchecked Sendable { var data = Data() }
    let outBox = Box(), errBox = Box()
    let g = DispatchGroup()
    g.enter(); DispatchQueue.global().async { outBox.data = out.fileHandleForReading.readDataToEndOfFile(); g.leave() }
    g.enter(); DispatchQueue.global().async { errBox.data = err.fileHandleForReading.readDataToEndOfFile(); g.leave() }
    let status = waitForExit(p, timeout: timeout, what: "\(name) \(args)")
    g.wait()
    let outData = outBox.data, errData = errBox.data
    return RunResult(status: status, stdout: String(decoding: outData, as: UTF8.self),
                     stderr: String(decoding: errData, as: UTF8.self), stdoutData: outData)
}

/// Waits for a started process by polling (not `waitUntilExit`'s run loop, which can miss the exit under
/// a shifted clock such as faketime's); a process still running after `timeout` seconds is killed and fails
/// the test, so no test can hang. Returns the exit status (128 + signal for a signal, as a shell reports it).
/// A child that exited but that Foundation never reaped (seen after a crash while the Swift backtracer ran)
/// is reaped here from its zombie state.
@discardableResult
func waitForExit(_ p: Process, timeout: TimeInterval = 300, what: String, file: StaticString = #filePath, line: UInt = #line) -> Int32 {
    var waited: TimeInterval = 0
    let pid = p.processIdentifier
    func zombieStatus() -> Int32? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")"), stat[stat.index(close, offsetBy: 2)] == "Z" else { return nil }
        var status: Int32 = 0
        guard waitpid(pid, &status, WNOHANG) == pid else { return nil }
        let sig = status & 0x7f
        return sig == 0 ? (status >> 8) & 0xff : 128 + sig
    }
    var ticks = 0  // of 10 ms; the zombie check runs once a second
    while p.isRunning && waited < timeout {
        if ticks >= 100, ticks % 100 == 0, let s = zombieStatus() { return s }
        usleep(10_000); waited += 0.01; ticks += 1
    }
    if p.isRunning {
        if let s = zombieStatus() { return s }
        kill(pid, SIGKILL)
        XCTFail("\(what) timed out after \(Int(timeout)) s", file: file, line: line)
        var spins = 0
        while p.isRunning && spins < 500 { usleep(10_000); spins += 1 }
        return zombieStatus() ?? 137
    }
    return p.terminationReason == .uncaughtSignal ? 128 + p.terminationStatus : p.terminationStatus
}

/// Asserts a failed run printed exactly one `error: …` line mentioning `contains`.
/// The one error contract: exactly one `error:` line mentioning `contains`, no crash, and exit `code` (1: bad
/// input or a runtime failure, 64: usage, 75: a held lock).
func assertToolError(_ r: RunResult, contains: String, code: Int32 = 1, file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(r.status, code, "exit status (stderr: \(r.stderr))", file: file, line: line)
    let lines = r.stderr.split(separator: "\n").filter { $0.hasPrefix("error: ") }
    XCTAssertEqual(lines.count, 1, "expected one error line, got: \(r.stderr)", file: file, line: line)
    XCTAssertTrue(r.stderr.contains(contains), "error should mention '\(contains)': \(r.stderr)", file: file, line: line)
    XCTAssertFalse(r.stderr.contains("Fatal error"), "crashed: \(r.stderr)", file: file, line: line)
}

func assertThrows<T>(_ expr: @autoclosure () throws -> T, contains: String, file: StaticString = #filePath, line: UInt = #line) {
    do {
        _ = try expr()
        XCTFail("expected an error mentioning '\(contains)'", file: file, line: line)
    } catch {
        XCTAssertTrue("\(error)".contains(contains), "error '\(error)' should mention '\(contains)'", file: file, line: line)
    }
}

/// Max absolute difference, for messages.
func maxAbsDiff(_ a: [Float], _ b: [Float]) -> Float {
    zip(a, b).reduce(0) { max($0, abs($1.0 - $1.1)) }
}

func jsonObject(_ s: String) throws -> JSONValue {
    try JSONParser().parse(s.trimmingCharacters(in: .whitespacesAndNewlines))
}

/// Writes bytes to a file (test inputs); a file that cannot be written fails the test where it was called.
func writeBytes(_ bytes: [UInt8], _ path: String, file: StaticString = #filePath, line: UInt = #line) {
    writeData(Data(bytes), path, file: file, line: line)
}

func writeData(_ data: Data, _ path: String, file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertTrue(FileManager.default.createFile(atPath: path, contents: data), "could not write \(path)", file: file, line: line)
}

/// A forward fixture case (Fixtures/forward/NAME): the model with the case's adapter attached, its batch, and io.
/// The right-padded batch of a fixture's io.safetensors (input_ids, attention_mask, labels; I64 [B, T]).
func fixtureBatch(_ io: SafetensorsFile) throws -> TokenBatch {
    func ints(_ t: TensorView) -> [Int32] { t.data.bindMemory(to: Int64.self).map { Int32($0) } }
    let ids = try io.tensor("input_ids"), mask = ints(try io.tensor("attention_mask"))
    let B = ids.shape[0], T = ids.shape[1]
    let lengths = (0..<B).map { b in (0..<T).reduce(0) { $0 + Int(mask[b * T + $1]) } }
    return TokenBatch(tokens: ints(ids), labels: ints(try io.tensor("labels")), lengths: lengths, batch: B, seq: T)
}

func loadForwardCase(_ name: String) throws -> (Transformer, ModelDir, TokenBatch, SafetensorsFile) {
    let dir = Fixtures.path("forward/" + name)
    let model = try ModelDir(path: dir + "/model")
    let io = try SafetensorsFile(path: dir + "/io.safetensors")
    let batch = try fixtureBatch(io)
    let tr = try Transformer(model: model)
    try tr.attach(try Adapter.load(dir + "/adapter"), linears: try model.linearModules())
    return (tr, model, batch, io)
}
