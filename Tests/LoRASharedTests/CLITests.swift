// CLITests: lora-quantize and lora-init run as a user runs them (Process): JSON on stdout, one `error:` line
// and a non-zero exit on bad input, adapters streamed through stdout.
import XCTest
@testable import LoRAShared
@testable import LoRAModel
@testable import LoRAEngine
@testable import LoRATrain
@testable import LoRATokenizer

final class CLITests: XCTestCase {
    var dir = ""
    override func setUp() { dir = makeTempDir("cli") }
    override func tearDown() { try? FileManager.default.removeItem(atPath: dir) }

    func testQuantizeWritesModelAndSummary() throws {
        let r = try runTool("lora-quantize", [Fixtures.path("tiny-llama"), "-o", dir + "/q", "--quiet"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let j = try jsonObject(r.stdout)
        XCTAssertEqual(j["tensors_quantized"], .int(14))
        XCTAssertEqual(j["quant_type"], .string("nf4"))
        XCTAssertGreaterThan(j["bits_per_quantized_weight"]?.doubleValue ?? 0, 4)
        XCTAssertTrue(FileManager.default.fileExists(atPath: dir + "/q/model.safetensors"))
        XCTAssertEqual(r.stderr, "", "--quiet prints nothing on stderr")
        // Nothing but the output folder was created beside it.
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir), ["q"])
    }

    func testQuantizeBadInput() throws {
        assertToolError(try runTool("lora-quantize", [Fixtures.path("tiny-llama"), "-o", dir + "/q", "--block-size", "48"]), contains: "--block-size 48", code: 64)
        assertToolError(try runTool("lora-quantize", [dir + "/missing", "-o", dir + "/q"]), contains: "not found")
        assertToolError(try runTool("lora-quantize", [Fixtures.path("tiny-llama-bnb"), "-o", dir + "/q"]), contains: "already quantized")
        try FileManager.default.createDirectory(atPath: dir + "/exists", withIntermediateDirectories: true)
        assertToolError(try runTool("lora-quantize", [Fixtures.path("tiny-llama"), "-o", dir + "/exists"]), contains: "--force")
        assertToolError(try runTool("lora-quantize", [Fixtures.path("tiny-llama"), "-o", dir + "/no/such/parent"]), contains: "does not exist")
        assertToolError(try runTool("lora-quantize", [Fixtures.path("tiny-llama")]), contains: "--output", code: 64)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir), ["exists"], "no partial outputs")
        let help = try runTool("lora-quantize", ["--help"])
        XCTAssertEqual(help.status, 0)
        XCTAssertTrue(help.stdout.contains("--block-size"))
    }

    func testInitFolderAndStream() throws {
        let r = try runTool("lora-init", [Fixtures.path("tiny-llama"), "-o", dir + "/a", "--rank", "8", "--targets", "all-linear", "--seed", "3"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let j = try jsonObject(r.stdout)
        XCTAssertEqual(j["trainable_params"], .int(16384))
        XCTAssertEqual(j["all_params"], .int(106816))
        XCTAssertEqual(j["modules"]?.arrayValue?.count, 14)
        let cfg = try jsonObject(String(contentsOfFile: dir + "/a/adapter_config.json", encoding: .utf8))
        XCTAssertEqual(cfg["peft_type"], .string("LORA"))
        XCTAssertEqual(cfg["lora_alpha"], .int(16))
        XCTAssertEqual(cfg["target_modules"]?.arrayValue?.count, 7)

        // `-o -`: one safetensors stream on stdout, the summary on stderr; same seed → same tensors.
        let s = try runTool("lora-init", [Fixtures.path("tiny-llama"), "-o", "-", "--rank", "8", "--targets", "all-linear", "--seed", "3"])
        XCTAssertEqual(s.status, 0, s.stderr)
        XCTAssertTrue(s.stderr.contains("\"trainable_params\": 16384"))
        let f = try SafetensorsFile(file: MappedFile(bytes: Array(s.stdoutData), name: "<stdout>"))
        XCTAssertNotNil(f.metadata["adapter_config"])
        let streamed = try Adapter.fromSingleFile(f)
        let folder = try Adapter.load(dir + "/a")
        XCTAssertEqual(streamed.moduleNames, folder.moduleNames)
        for n in folder.moduleNames { XCTAssertEqual(streamed.modules[n]!.a, folder.modules[n]!.a, n) }
    }

    func testInitOnQuantizedModel() throws {
        XCTAssertEqual(try runTool("lora-quantize", [Fixtures.path("tiny-llama"), "-o", dir + "/q", "-q"]).status, 0)
        let r = try runTool("lora-init", [dir + "/q", "-o", dir + "/a"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let j = try jsonObject(r.stdout)
        XCTAssertEqual(j["quantized_base"], .bool(true))
        XCTAssertEqual(j["trainable_params"], .int(14336))
        XCTAssertEqual(j["all_params"], .int(104768))
    }

    func testInitBadInput() throws {
        let m = Fixtures.path("tiny-llama")
        assertToolError(try runTool("lora-init", [m, "-o", dir + "/a", "--targets", "qkv"]), contains: "q_proj")
        assertToolError(try runTool("lora-init", [m, "-o", dir + "/a", "--rank", "0"]), contains: "--rank", code: 64)
        assertToolError(try runTool("lora-init", [m, "-o", dir + "/a", "--rank", "100"]), contains: "min(in, out)")
        assertToolError(try runTool("lora-init", [m, "-o", dir + "/a", "--dropout", "1.5"]), contains: "--dropout", code: 64)
        assertToolError(try runTool("lora-init", [m, "-o", dir + "/a", "--init", "xavier"]), contains: "xavier", code: 64)
        assertToolError(try runTool("lora-init", [Fixtures.path("quant"), "-o", dir + "/a"]), contains: "config.json")
        XCTAssertEqual(try runTool("lora-init", [m, "-o", dir + "/a"]).status, 0)
        assertToolError(try runTool("lora-init", [m, "-o", dir + "/a"]), contains: "already exists")
        XCTAssertEqual(try runTool("lora-init", [m, "-o", dir + "/a", "--force", "--rank", "4"]).status, 0)
        let cfg = try jsonObject(String(contentsOfFile: dir + "/a/adapter_config.json", encoding: .utf8))
        XCTAssertEqual(cfg["r"], .int(4))
    }

    func testOnlyOneStdinConsumer() throws {
        let claim = StdinClaim()
        try claim.claim("--data")
        assertThrows(try claim.claim("the adapter"), contains: "only one input per command")
    }
}
