// LossCurveTests: the loss curve (OUT/loss.svg). The SVG writer gives well-formed XML (parsed with XMLParser) with one
// marker per point, both axes, escaped text, a sane chart for one point or a constant, thinning for long runs and
// the same bytes for the same points; lora-train writes it with the logged and validation steps and names it in its
// summary; a resumed run's curve holds the points from before the interruption (the same bytes as an uninterrupted
// run), and one resumed from a checkpoint without a history still trains to the same adapter; lora-eval points to it.
import XCTest
#if canImport(FoundationXML)
import FoundationXML
#endif
@testable import LoRACLI
@testable import LoRAShared
@testable import LoRATrain

/// Elements of an XML document, with their attributes, in document order; nil when it does not parse.
final class XMLElements: NSObject, XMLParserDelegate {
    var elements: [(name: String, attributes: [String: String])] = []
    var text = ""
    static func parse(_ s: String) -> XMLElements? {
        let d = XMLElements()
        let p = XMLParser(data: Data(s.utf8))
        p.delegate = d
        return p.parse() ? d : nil
    }
    func parser(_ parser: XMLParser, didStartElement name: String, namespaceURI: String?, qualifiedName: String?,
                attributes: [String: String] = [:]) {
        elements.append((name, attributes))
    }
    func parser(_ parser: XMLParser, foundCharacters string: String) { text += string }
    func count(_ name: String, class cls: String? = nil) -> Int {
        elements.filter { $0.name == name && (cls == nil || $0.attributes["class"] == cls) }.count
    }
    func element(id: String) -> [String: String]? { elements.first { $0.attributes["id"] == id }?.attributes }
}

final class LossCurveTests: XCTestCase {
    func points(_ n: Int, validEvery: Int = 0) -> [LogPoint] {
        (1...n).map { (i: Int) -> LogPoint in
            let x = Double(i)
            let loss: Double = 3 / x + 0.1 * sin(x)
            let lr: Double = 2e-4 * Double(n - i + 1) / Double(n)
            let valid: Double? = validEvery > 0 && i % validEvery == 0 ? 3.2 / x : nil
            return LogPoint(step: i * 10, loss: loss, lr: lr, validLoss: valid)
        }
    }

    func parsed(_ plot: LossPlot, file: StaticString = #filePath, line: UInt = #line) throws -> (String, XMLElements) {
        let svg = plot.svg()
        let x = try XCTUnwrap(XMLElements.parse(svg), "not well-formed XML:\n\(svg)", file: file, line: line)
        return (svg, x)
    }

    func testChartIsWellFormedWithBothAxesAndEveryPoint() throws {
        let (svg, x) = try parsed(LossPlot(title: LossPlot.title(model: "/m/SmolLM2-135M", r: 8, lr: 2e-4, steps: 200),
                                           points: points(20, validEvery: 5)))
        XCTAssertTrue(svg.hasPrefix("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\""))
        let root = try XCTUnwrap(x.elements.first)
        XCTAssertEqual(root.name, "svg")
        XCTAssertEqual(root.attributes["width"], "800")
        XCTAssertEqual(root.attributes["height"], "450")
        XCTAssertEqual(root.attributes["viewBox"], "0 0 800 450")
        XCTAssertEqual(x.count("circle", class: "train-point"), 20)
        XCTAssertEqual(x.count("rect", class: "valid-point"), 4)
        for id in ["train", "valid", "lr"] {
            let pts = try XCTUnwrap(x.element(id: id)?["points"], id).split(separator: " ")
            XCTAssertEqual(pts.count, id == "valid" ? 4 : 20, id)
        }
        XCTAssertEqual(x.element(id: "lr")?["stroke-dasharray"], "6 4", "the learning rate is dashed")
        XCTAssertNotNil(x.element(id: "loss-axis"))
        XCTAssertNotNil(x.element(id: "lr-axis"), "a second axis for the learning rate")
        XCTAssertNotNil(x.element(id: "x-axis"))
        XCTAssertNotNil(x.element(id: "legend"))
        XCTAssertTrue(x.text.contains("lora-train: SmolLM2-135M · r 8 · lr 2e-4 · 200 steps"), x.text)
        XCTAssertTrue(x.text.contains("learning rate (right axis)"))
        XCTAssertTrue(x.text.contains("valid loss"))
        // Round-number ticks: the lr axis from 0 in steps of 1, 2 or 5 × 10^k; the x axis in whole steps.
        XCTAssertTrue(x.text.contains("5e-5") && x.text.contains("2e-4"), x.text)
        XCTAssertTrue(x.text.contains("100") && x.text.contains("200"), x.text)
        // Every coordinate lies inside the picture.
        for p in (x.element(id: "train")!["points"]!).split(separator: " ") {
            let c = p.split(separator: ",").map { Double($0)! }
            XCTAssertTrue((0...800).contains(c[0]) && (0...450).contains(c[1]), String(p))
        }
    }

    func testSameInputsGiveTheSameBytes() {
        let p = points(37, validEvery: 4)
        XCTAssertEqual(LossPlot(title: "t", points: p).svg(), LossPlot(title: "t", points: p).svg())
        XCTAssertNotEqual(LossPlot(title: "t", points: p).svg(), LossPlot(title: "t", points: Array(p.dropLast())).svg())
    }

    func testEscapingOnePointConstantsAndNonFiniteValues() throws {
        // XML-special and control characters in the title.
        let (_, x) = try parsed(LossPlot(title: LossPlot.title(model: "/m/a<b>&\"c'\u{1}", r: 4, lr: 0.01, steps: 1),
                                         points: [LogPoint(step: 1, loss: 2.5, lr: 0.01)]))
        XCTAssertTrue(x.text.contains("a<b>&\"c'?"), x.text)
        XCTAssertTrue(x.text.contains("1 step"), x.text)
        XCTAssertEqual(x.count("circle", class: "train-point"), 1, "a single point is drawn")
        XCTAssertEqual(x.count("rect", class: "valid-point"), 0)
        XCTAssertNil(x.element(id: "valid"))
        // Constant loss and learning rate: finite coordinates, ticks around the value.
        let flat = (1...5).map { LogPoint(step: $0, loss: 1.0, lr: 1e-3) }
        let (svg, fx) = try parsed(LossPlot(title: "flat", points: flat))
        XCTAssertFalse(svg.contains("nan") || svg.contains("inf"), svg)
        XCTAssertEqual(fx.count("circle", class: "train-point"), 5)
        // Non-finite values are skipped, not drawn and not fatal.
        let bad = [LogPoint(step: 1, loss: 2, lr: 1e-3), LogPoint(step: 2, loss: .nan, lr: 1e-3, validLoss: .infinity),
                   LogPoint(step: 3, loss: 1.5, lr: .nan, validLoss: 1.7)]
        let (bsvg, bx) = try parsed(LossPlot(title: "bad", points: bad))
        XCTAssertFalse(bsvg.lowercased().contains("nan") || bsvg.contains("inf"), bsvg)
        XCTAssertEqual(bx.count("circle", class: "train-point"), 2)
        XCTAssertEqual(bx.count("rect", class: "valid-point"), 1)
        XCTAssertEqual(bx.element(id: "lr")?["points"]?.split(separator: " ").count, 2)
        // No point at all: an empty frame, still well-formed.
        let (_, ex) = try parsed(LossPlot(title: "none", points: []))
        XCTAssertTrue(ex.text.contains("no logged step yet"))
    }

    func testLongRunsAreThinnedKeepingSpikesAndTheLastPoint() throws {
        var p = (1...10_000).map { LogPoint(step: $0, loss: 2 + 0.001 * Double($0 % 7), lr: 1e-4) }
        p[4321].loss = 9
        let (svg, x) = try parsed(LossPlot(title: "long", points: p))
        let train = x.element(id: "train")!["points"]!.split(separator: " ")
        XCTAssertLessThanOrEqual(train.count, 2000)
        XCTAssertGreaterThan(train.count, 1000)
        XCTAssertEqual(x.count("circle", class: "train-point"), 0, "no markers on thousands of points")
        XCTAssertLessThan(svg.utf8.count, 200_000)
        let ys = train.map { Double($0.split(separator: ",")[1])! }
        XCTAssertLessThan(ys.min()!, 150, "the spike is kept (near the top of the plot; the rest lies at the bottom)")
        XCTAssertEqual(LossPlot.thin(p.map { (Double($0.step), $0.loss) }, 2000).last!.x, 10_000)
    }

    func testNiceNumbersAndSparkline() {
        XCTAssertEqual(LossPlot.niceStep(0.37), 0.5)
        XCTAssertEqual(LossPlot.niceStep(13), 20)
        XCTAssertEqual(LossPlot.niceStep(1), 1)
        XCTAssertEqual(LossPlot.number(2e-4), "2e-4")
        XCTAssertEqual(LossPlot.number(1.5e-5), "1.5e-5")
        XCTAssertEqual(LossPlot.number(0.01), "0.01")
        XCTAssertEqual(LossPlot.number(3), "3")
        // An axis in steps below 1e-3 labels every tick the same way.
        let lr = LossPlot.Axis(lo: 0, hi: 2e-3, integer: false, floorAtZero: true)
        XCTAssertEqual(lr.ticks.map { lr.label($0) }, ["0", "5e-4", "1e-3", "1.5e-3", "2e-3"])
        let a = LossPlot.Axis(lo: 1.23, hi: 3.41, integer: false, floorAtZero: false)
        XCTAssertEqual(a.ticks.map { a.label($0) }, ["1.0", "1.5", "2.0", "2.5", "3.0", "3.5"])
        let s = LossPlot.Axis(lo: 7, hi: 7, integer: true, floorAtZero: false)
        XCTAssertEqual(s.ticks.map { s.label($0) }, ["6", "7", "8"])
        XCTAssertEqual(Sparkline.render([3, 2, 1, 0]), "█▆▃▁")
        XCTAssertEqual(Sparkline.render([1, 1]), "▄▄")
        XCTAssertEqual(Sparkline.render([]), "")
        XCTAssertEqual(Sparkline.render(Array(repeating: 1.0, count: 30) + [.nan]).count, 16)
    }

    // MARK: end to end

    var dir = "", model = "", adapter = "", data = ""

    func setUpRun() throws {
        dir = makeTempDir("curve")
        model = dir + "/model"
        try TinyModel.write(to: model)
        adapter = dir + "/adapter"
        XCTAssertEqual(try runTool("lora-init", [model, "-o", adapter, "--targets", "q_proj,v_proj", "--rank", "4", "--seed", "1"]).status, 0)
        let rows = (0..<12).map { #"{"text": "The harbour master counted \#($0) bells of the eastern tower before the first frost."}"# }
        data = dir + "/data.jsonl"
        try (rows.joined(separator: "\n") + "\n").write(toFile: data, atomically: true, encoding: .utf8)
    }
    override func tearDown() { if !dir.isEmpty { try? FileManager.default.removeItem(atPath: dir) } }

    func train(_ out: String, _ extra: [String], env: [String: String] = [:]) throws -> RunResult {
        try runTool("lora-train", [model, adapter, "--data", data, "-o", out, "--seq-len", "48", "--batch-size", "2", "--lr", "5e-3",
                                    "--seed", "7", "-q"] + extra, env: env)
    }

    func curve(_ path: String) throws -> XMLElements {
        let svg = try String(contentsOfFile: path, encoding: .utf8)
        return try XCTUnwrap(XMLElements.parse(svg), svg)
    }

    func testTrainWritesTheCurveAndEvalPointsToIt() throws {
        try setUpRun()
        let out = dir + "/o"
        let r = try train(out, ["--max-steps", "6", "--log-every", "2", "--valid", data, "--eval-every", "3", "--save-every", "3"])
        XCTAssertEqual(r.status, 0, r.stderr)
        // Logged: steps 2, 3 (validation), 4, 6 (validation, last).
        let lines = r.stdout.split(separator: "\n").map { try! jsonObject(String($0)) }
        XCTAssertEqual(lines.dropLast().map { $0["step"]?.intValue }, [2, 3, 4, 6])
        XCTAssertEqual(lines.last?["loss_curve"], .string(out + "/loss.svg"))
        let x = try curve(out + "/loss.svg")
        XCTAssertEqual(x.count("circle", class: "train-point"), 4)
        XCTAssertEqual(x.count("rect", class: "valid-point"), 2)
        XCTAssertTrue(x.text.contains("lora-train: model · r 4 · lr 0.005 · 6 steps"), x.text)
        XCTAssertFalse(try FileManager.default.contentsOfDirectory(atPath: out).contains { $0.contains(".tmp-") }, "no temporary file left")
        // The checkpoint keeps the history up to its step.
        let h = LogHistory.load(checkpoint: out + "/checkpoints/step-0000003", upTo: 3)
        XCTAssertNil(h.problem)
        XCTAssertEqual(h.points.map(\.step), [2, 3])
        XCTAssertNotNil(h.points[1].validLoss)

        // lora-eval names the curve of the run an adapter (or a checkpoint of it) comes from; not for other adapters.
        for (a, expected) in [(out, out + "/loss.svg"), (out + "/", out + "/loss.svg"),
                              (out + "/checkpoints/step-0000003", out + "/loss.svg")] {
            let e = try runTool("lora-eval", [model, "--adapter", a, "--data", data, "--seq-len", "48", "-q"])
            XCTAssertEqual(e.status, 0, e.stderr)
            XCTAssertEqual(try jsonObject(e.stdout)["loss_curve"], .string(expected), a)
        }
        let e = try runTool("lora-eval", [model, "--adapter", adapter, "--data", data, "--seq-len", "48", "-q"])
        XCTAssertEqual(e.status, 0, e.stderr)
        XCTAssertNil(try jsonObject(e.stdout)["loss_curve"])

        // --sanity-check and --show-examples write no curve.
        let s = try runTool("lora-train", [model, adapter, "--data", data, "-o", dir + "/s", "--seq-len", "48", "--sanity-check",
                                           "--sanity-steps", "2", "-q"])
        XCTAssertTrue([0, 1].contains(s.status), s.stderr)
        XCTAssertEqual(try runTool("lora-train", [model, "--data", data, "-o", dir + "/x", "--show-examples", "1"]).status, 0)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/s/loss.svg"))
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/x"))
    }

    func testResumedCurveHoldsEveryPoint() throws {
        try setUpRun()
        let args = ["--max-steps", "9", "--log-every", "1", "--grad-accum", "2", "--warmup-steps", "2", "--save-every", "4"]
        let full = try train(dir + "/full", args)
        XCTAssertEqual(full.status, 0, full.stderr)
        // Broken off at step 6 (NaN), resumed from the step-4 checkpoint: the same curve as the uninterrupted run.
        let part = try train(dir + "/part", args, env: ["LORA_TEST_NAN_AT_STEP": "6"])
        assertToolError(part, contains: "step 6: the loss is not finite")
        XCTAssertEqual(try curve(dir + "/part/loss.svg").count("circle", class: "train-point"), 5, "the curve up to the last logged step")
        let resumed = try train(dir + "/part", args + ["--resume"])
        XCTAssertEqual(resumed.status, 0, resumed.stderr)
        XCTAssertEqual(try curve(dir + "/part/loss.svg").count("circle", class: "train-point"), 9)
        XCTAssertEqual(try String(contentsOfFile: dir + "/part/loss.svg", encoding: .utf8),
                       try String(contentsOfFile: dir + "/full/loss.svg", encoding: .utf8), "resumed curve = uninterrupted curve")

        // A checkpoint from before log_history.json: resumes to the same adapter, its curve starting at the resume.
        let old = try train(dir + "/old", args, env: ["LORA_TEST_NAN_AT_STEP": "6"])
        assertToolError(old, contains: "step 6")
        try FileManager.default.removeItem(atPath: dir + "/old/checkpoints/step-0000004/" + LogHistory.fileName)
        let r = try runTool("lora-train", [model, adapter, "--data", data, "-o", dir + "/old", "--seq-len", "48", "--batch-size", "2",
                                           "--lr", "5e-3", "--seed", "7", "--resume"] + args)
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stderr.contains("the loss curve starts at step 5"), r.stderr)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: dir + "/old/adapter_model.safetensors")),
                       try Data(contentsOf: URL(fileURLWithPath: dir + "/full/adapter_model.safetensors")))
        XCTAssertEqual(try curve(dir + "/old/loss.svg").count("circle", class: "train-point"), 5)
    }
}
