// TemplateLimitsTests: templates that would exhaust the stack, memory or time fail with ChatTemplateError.limit
// naming the bound (TemplateLimits), and what stays just inside a bound still renders.
import Foundation
import XCTest
@testable import LoRAShared
@testable import LoRAModel
@testable import LoRAEngine
@testable import LoRATrain
@testable import LoRATokenizer

final class TemplateLimitsTests: XCTestCase {
    /// Renders `source` with no messages.
    private func render(_ source: String, maxWork: Int = TemplateLimits.maxWork) throws -> String {
        var t = try ChatTemplate(source, name: "t")
        t.maxWork = maxWork
        return try t.render(messages: [], addGenerationPrompt: false)
    }

    /// `source` fails to parse or render with a limit error that names `limit`.
    private func assertLimit(_ source: String, _ limit: String, maxWork: Int = TemplateLimits.maxWork, maxSeconds: Double = 5,
                             file: StaticString = #filePath, line: UInt = #line) {
        let t0 = Date()
        do {
            let out = try render(source, maxWork: maxWork)
            XCTFail("rendered \(out.utf8.count) bytes, expected a limit error", file: file, line: line)
        } catch let e as ChatTemplateError {
            guard case .limit = e else { return XCTFail("expected a limit error, got \(e)", file: file, line: line) }
            XCTAssertTrue(e.description.contains("TemplateLimits.\(limit)"), e.description, file: file, line: line)
            XCTAssertTrue(e.description.contains("fix the template"), e.description, file: file, line: line)
        } catch {
            XCTFail("unexpected \(error)", file: file, line: line)
        }
        let dt = Date().timeIntervalSince(t0)
        XCTAssertLessThan(dt, maxSeconds, "took \(dt) s", file: file, line: line)
    }

    func testRecursiveMacro() throws {
        assertLimit("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", "maxCallDepth")
        assertLimit("{% macro a() %}{{ b() }}{% endmacro %}{% macro b() %}{{ a() }}{% endmacro %}{{ a() }}", "maxCallDepth")
        // As deep as allowed: renders, on the 8 MB main thread of a debug build.
        let n = TemplateLimits.maxCallDepth - 1
        let out = try render("{% macro f(n) %}{% if n > 0 %}{{ f(n - 1) }}{% endif %}x{% endmacro %}{{ f(\(n)) }}")
        XCTAssertEqual(out, String(repeating: "x", count: n + 1))
    }

    func testDeepNesting() throws {
        let deep = 5000
        assertLimit("{{ " + String(repeating: "(", count: deep) + "1" + String(repeating: ")", count: deep) + " }}", "maxNesting")
        assertLimit("{{ " + String(repeating: "[", count: deep) + String(repeating: "]", count: deep) + " }}", "maxNesting")
        assertLimit("{{ " + String(repeating: "not ", count: deep) + "1 }}", "maxNesting")
        assertLimit("{{ " + String(repeating: "-", count: deep) + "1 }}", "maxNesting")
        assertLimit("{{ 1" + String(repeating: " + 1", count: deep) + " }}", "maxNesting")
        assertLimit("{{ x" + String(repeating: ".a", count: deep) + " }}", "maxNesting")
        assertLimit("{{ 1" + String(repeating: " if 1 else 1", count: deep) + " }}", "maxNesting")
        assertLimit("{{ 1" + String(repeating: " | abs", count: deep) + " }}", "maxNesting")
        assertLimit(String(repeating: "{% if true %}", count: deep) + String(repeating: "{% endif %}", count: deep), "maxNesting")
        assertLimit(String(repeating: "{% for i in [1] %}", count: deep) + String(repeating: "{% endfor %}", count: deep), "maxNesting")
        // Chains inside parentheses inside chains: the tree's depth counts, not the parser's.
        assertLimit("{{ " + String(repeating: "(", count: 100) + "1" + String(repeating: " + 1 + 1 + 1 + 1)", count: 100) + " }}", "maxNesting")

        // Just inside the bound: parses, checks and renders without running out of stack.
        let ok = TemplateLimits.maxNesting - 10
        XCTAssertEqual(try render("{{ " + String(repeating: "(", count: ok) + "7" + String(repeating: ")", count: ok) + " }}"), "7")
        XCTAssertEqual(try render("{{ " + String(repeating: "[", count: ok) + String(repeating: "]", count: ok) + " | length }}"), "1")
        XCTAssertEqual(try render("{{ 0" + String(repeating: " + 1", count: ok) + " }}"), "\(ok)")
        XCTAssertEqual(try render(String(repeating: "{% if true %}", count: ok) + "y" + String(repeating: "{% endif %}", count: ok)), "y")
    }

    func testHugeStringsAndLists() {
        assertLimit(#"{{ "x" * 10**10 }}"#, "maxStringBytes")
        assertLimit(#"{{ 10**10 * "x" }}"#, "maxStringBytes")
        assertLimit(#"{{ [1] * 10**9 }}"#, "maxListItems")
        assertLimit(#"{{ "a" | indent(10**9) }}"#, "maxStringBytes")
        assertLimit(#"{{ ("a\n" * 1000000) | indent(100) }}"#, "maxStringBytes")
        assertLimit(#"{{ [1, [2]] | tojson(indent=10**9) }}"#, "maxStringBytes")
        assertLimit(#"{% set s = "x" * 1000000 %}{{ ([s] * 100) | join(",") }}"#, "maxStringBytes")
        assertLimit(#"{% set s = "x" * 1000000 %}{{ ",".join([s] * 100) }}"#, "maxStringBytes")
        assertLimit(#"{{ ("a" * 1000000) | replace("a", "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb") }}"#, "maxStringBytes")
        assertLimit(#"{{ ("{0}" * 100).format("x" * 1000000) }}"#, "maxStringBytes")
        // Doubling inside a loop, and a list that holds another many times over (tiny in memory, huge printed).
        assertLimit(#"{% set ns = namespace(s="x") %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}"#, "maxStringBytes")
        assertLimit(#"{% set ns = namespace(s="x") %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}{% endfor %}"#, "maxStringBytes")
        // (printing charges every element walked, so the work budget ends it before the 64 MiB of text)
        assertLimit(#"{% set a = [1] * 1000 %}{% set b = [a] * 1000 %}{% set c = [b] * 1000 %}{{ c }}"#, "maxWork")
        // The rendered text itself.
        assertLimit(#"{% for i in range(100000) %}{{ "x" * 1000 }}{% endfor %}"#, "maxStringBytes")
    }

    func testWorkBudget() throws {
        // The real budget, by loop iterations alone (10^10 of them otherwise).
        assertLimit("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", "maxWork", maxSeconds: 30)
        // A lowered budget, reached by iterations, macro calls, and bytes read with little output.
        let small = 100_000
        assertLimit("{% for i in range(1000) %}{% for j in range(1000) %}{% endfor %}{% endfor %}", "maxWork", maxWork: small)
        assertLimit("{% macro f() %}{% endmacro %}{% for i in range(1000) %}{% for j in range(100) %}{{ f() }}{% endfor %}{% endfor %}", "maxWork", maxWork: small)
        assertLimit(#"{% set s = "x" * 1000000 %}{% for i in range(100000) %}{% if "y" in s %}{% endif %}{% endfor %}"#, "maxWork", maxWork: small)
        XCTAssertEqual(try render("{% for i in range(250) %}{% for j in range(250) %}{% endfor %}{% endfor %}ok", maxWork: small), "ok")
        // Statements and expressions count, not only iterations: 1,000 iterations of 100 statements each were
        // 1,000 units (the fuzzer found a 700 × 700 loop of assignments that took 14 s under ASan in budget).
        let body = String(repeating: "{% set x = i + 1 %}", count: 100)
        assertLimit("{% for i in range(1000) %}\(body){% endfor %}", "maxWork", maxWork: small)
        XCTAssertEqual(try render("{% for i in range(100) %}\(body){% endfor %}ok", maxWork: small), "ok")
    }

    /// A long conversation through a real model's template and tokenizer: linear, and far inside every limit.
    /// Values the template builds nest at most TemplateLimits.maxValueDepth deep: building deeper through a loop
    /// fails with the limit (before: a 90,000-deep list crashed with SIGSEGV when printed or released).
    func testDeeplyNestedValues() throws {
        let loop = "{% set ns = namespace(x=[]) %}{% for i in range(90000) %}"
        assertLimit(loop + "{% set ns.x = [ns.x] %}{% endfor %}{{ ns.x }}", "maxValueDepth")
        assertLimit(loop + "{% set ns.x = (ns.x,) %}{% endfor %}{{ ns.x|length }}", "maxValueDepth")
        assertLimit(loop + "{% set ns.x = {'a': ns.x} %}{% endfor %}{{ ns.x|length }}", "maxValueDepth")
        assertLimit(loop + "{% set ns.x = {'a': ns.x}.items()|list %}{% endfor %}{{ ns.x|length }}", "maxValueDepth")
        assertLimit(loop + "{% set ns.x = dict(a=ns.x) %}{% endfor %}{{ ns.x|length }}", "maxValueDepth")
        // A chain of namespaces grown at its tail: every walk of it stops at the bound, and releasing it at the
        // end of the render does not recurse.
        let chain = "{% set ns = namespace(head=namespace()) %}{% set ns.tail = ns.head %}{% for i in range(90000) %}"
            + "{% set t = ns.tail %}{% set t.next = namespace() %}{% set ns.tail = t.next %}{% endfor %}"
        XCTAssertEqual(try render(chain + "done"), "done")
        assertLimit(chain + "{{ ns.head }}", "maxValueDepth")
        assertLimit(chain + "{{ [ns.head] }}", "maxValueDepth")
        assertLimit(chain + "{{ ns.head|string }}", "maxValueDepth")
        // A namespace that holds itself.
        assertLimit("{% set ns = namespace() %}{% set ns.me = ns %}{{ ns }}", "maxValueDepth")
        // Just inside the bound: builds, compares, prints and serializes.
        let n = TemplateLimits.maxValueDepth - 2
        let out = try render("{% set ns = namespace(x=1) %}{% for i in range(\(n)) %}{% set ns.x = [ns.x] %}{% endfor %}"
                             + "{{ ns.x == ns.x }} {{ (ns.x|tojson)|length }} {{ (ns.x|string)|length }}")
        XCTAssertEqual(out, "True \(2 * n + 1) \(2 * n + 1)")
    }

    /// A value that holds another many times over (`x = [x, x]`, 2^60 leaves in 60 steps) is charged for every
    /// node an operation walks: comparisons, `in`, sorting, printing and tojson stop at the work budget within
    /// seconds (before: == on such a list ran for hours).
    func testSharedValuesChargeEveryNodeWalked() throws {
        let dag = "{% set ns = namespace(x=[1]) %}{% for i in range(60) %}{% set ns.x = [ns.x, ns.x] %}{% endfor %}"
        for op in ["{{ ns.x == ns.x }}", "{{ ns.x != [ns.x] }}", "{{ ns.x < ns.x }}", "{{ ns.x in [ns.x] }}", "{{ [ns.x, ns.x]|sort }}",
                   "{{ ns.x }}", "{{ ns.x|string }}", "{{ ns.x|tojson }}", "{{ [ns.x]|unique|list }}", "{{ ns.x is eq ns.x }}",
                   "{{ [ns.x, ns.x]|max }}", "{{ [ns.x, ns.x].count(ns.x) }}"] {
            assertLimit(dag + op, "maxWork", maxWork: 1_000_000)
        }
        // Strings shared many times over are charged by their bytes.
        let big = "{% set s = 'x' * 1000000 %}{% set l = [s] * 4000000 %}"
        assertLimit(big + "{{ l == l }}", "maxWork", maxWork: 1_000_000)
        // The same shapes at a small size still work.
        XCTAssertEqual(try render("{% set ns = namespace(x=[1]) %}{% for i in range(5) %}{% set ns.x = [ns.x, ns.x] %}{% endfor %}"
                                  + "{{ ns.x == ns.x }} {{ (ns.x|tojson)|length }}"), "True 220")
    }

    func testLongConversationIsLinear() throws {
        let dir = DemoModelTests.modelDir
        guard FileManager.default.fileExists(atPath: dir + "/tokenizer.json") else { throw XCTSkip("no \(dir)") }
        let tok = try Tokenizer.load(directory: dir)
        let tpl = try ChatTemplate(XCTUnwrap(tok.chatTemplate), name: "smollm2")
        func seconds(_ turns: Int) throws -> Double {
            let msgs: [JSONValue] = (0..<turns).map { i in
                .object(JSONObject([("role", .string(i % 2 == 0 ? "user" : "assistant")),
                                    ("content", .string("Turn \(i): the quick brown fox jumps over the lazy dog."))]))
            }
            let t0 = Date()
            let text = try tpl.render(messages: msgs, addGenerationPrompt: true, variables: tok.templateVariables)
            let ids = try tok.encodeChecked(text, addSpecialTokens: false)
            XCTAssertGreaterThan(ids.count, turns * 15)
            return Date().timeIntervalSince(t0)
        }
        _ = try seconds(100)  // warm up
        // 1,000 turns take under 1% of the work budget (what TemplateLimits.maxWork promises).
        var lean = tpl
        lean.maxWork = TemplateLimits.maxWork / 100
        let turns: [JSONValue] = (0..<1000).map { i in
            .object(JSONObject([("role", .string(i % 2 == 0 ? "user" : "assistant")), ("content", .string("Turn \(i).") )]))
        }
        XCTAssertNoThrow(try lean.render(messages: turns, addGenerationPrompt: true, variables: tok.templateVariables))
        let t1k = try seconds(1000), t4k = try seconds(4000)
        print("1000 turns: \(t1k) s, 4000 turns: \(t4k) s")
        XCTAssertLessThan(t4k, 10)
        XCTAssertLessThan(t4k, 6 * t1k + 0.5, "4000 turns \(t4k) s vs 1000 turns \(t1k) s: superlinear")
    }

    /// A messages row of thousands of turns took 22 s (2,000 turns) to build: every assistant turn renders the
    /// conversation so far. Turns starting beyond --seq-len are no longer placed one by one, so the cost is
    /// bounded by --seq-len, and the tokens within it are exactly those of the unbounded build.
    func testLongMessagesRowBuildsInBoundedTime() throws {
        let dir = DemoModelTests.modelDir
        guard FileManager.default.fileExists(atPath: dir + "/tokenizer.json") else { throw XCTSkip("no \(dir)") }
        let tok = try Tokenizer.load(directory: dir)
        func row(_ turns: Int) -> JSONLRecord {
            let msgs: [JSONValue] = (0..<turns).map { i in
                .object(JSONObject([("role", .string(i % 2 == 0 ? "user" : "assistant")),
                                    ("content", .string("Turn \(i): the quick brown fox jumps over the lazy dog."))]))
            }
            return JSONLRecord(line: 1, value: JSONObject([("messages", .array(msgs))]))
        }
        let bounded = try ExampleBuilder(tokenizer: tok, maskPrompt: nil, path: "d.jsonl", maxTokens: 256)
        let unbounded = try ExampleBuilder(tokenizer: tok, maskPrompt: nil, path: "d.jsonl")
        let small = row(60)
        let a = try bounded.build(small), b = try unbounded.build(small)
        XCTAssertGreaterThan(b.ids.count, 256)
        XCTAssertGreaterThan(a.ids.count, 256)
        XCTAssertEqual(Array(a.ids.prefix(256)), Array(b.ids.prefix(256)))
        XCTAssertEqual(Array(a.targets.prefix(256)), Array(b.targets.prefix(256)))
        let t0 = Date()
        let big = try bounded.build(row(4000))
        let dt = Date().timeIntervalSince(t0)
        XCTAssertGreaterThan(big.ids.count, 256)
        XCTAssertLessThan(dt, 5, "4,000 turns at --seq-len 256 took \(dt) s")
    }
}
