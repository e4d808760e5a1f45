// LogHistory: the logged points of a run (step, train loss, learning rate, validation loss where evaluated), kept
// by the Trainer and persisted in each checkpoint as log_history.json, so a resumed run's loss curve still holds
// the points from before the interruption. Checkpoints from before this file existed have none: they resume as
// before, with a curve that starts at the resume. It never affects training: the adapter bytes are the same.
import Foundation

public struct LogPoint: Codable, Sendable, Equatable {
    public var step: Int
    public var loss: Double
    public var lr: Double
    public var validLoss: Double?

    public init(step: Int, loss: Double, lr: Double, validLoss: Double? = nil) {
        self.step = step
        self.loss = loss
        self.lr = lr
        self.validLoss = validLoss
    }

    enum CodingKeys: String, CodingKey {
        case step, loss, lr
        case validLoss = "valid_loss"
    }
}

struct LogHistoryFile: Codable {
    var format = LogHistory.format
    var points: [LogPoint]
}

public enum LogHistory {
    public static let fileName = "log_history.json"
    static let format = "lora-pipeline-log-history-1"
    /// Far beyond any real history (Limits.maxSteps points of ~80 bytes); a larger file is damage.
    static let maxBytes = 256 << 20

    /// Compact JSON: one object, sorted keys, Doubles in their shortest round-trip form.
    public static func encode(_ points: [LogPoint]) throws -> String {
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys]
        return String(decoding: try enc.encode(LogHistoryFile(points: points)), as: UTF8.self) + "\n"
    }

    /// The history saved in checkpoint `path`, limited to steps 1...`upTo` (the checkpoint's own step), in step order,
    /// non-finite values dropped. `points` is empty and `problem` says why when the checkpoint has none (an older
    /// lora-train) or it cannot be read; resuming never fails because of it.
    public static func load(checkpoint path: String, upTo step: Int) -> (points: [LogPoint], problem: String?) {
        let file = path + "/" + fileName
        guard FileManager.default.fileExists(atPath: file) else {
            return ([], "\(path) holds no \(fileName) (written by an older lora-train)")
        }
        let size = ((try? FileManager.default.attributesOfItem(atPath: file))?[.size] as? NSNumber)?.intValue ?? 0
        guard size <= maxBytes, let data = FileManager.default.contents(atPath: file) else {
            return ([], "\(file) is unreadable or too large")
        }
        let decoded: LogHistoryFile
        do { decoded = try JSONDecoder().decode(LogHistoryFile.self, from: data) } catch {
            return ([], "\(file) is unreadable: \(error)")
        }
        guard decoded.format == format else { return ([], "\(file) has the unknown format '\(decoded.format)'") }
        var out: [LogPoint] = []
        for var p in decoded.points where p.step >= 1 && p.step <= step && p.loss.isFinite && p.lr.isFinite {
            if let v = p.validLoss, !v.isFinite { p.validLoss = nil }
            if let last = out.last, p.step <= last.step { continue }
            out.append(p)
        }
        return (out, nil)
    }
}
