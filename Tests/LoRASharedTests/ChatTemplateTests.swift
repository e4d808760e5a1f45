// ChatTemplateTests: the Jinja interpreter against transformers' own rendering (Fixtures/chat, written by
// scripts/gen_chat_fixtures.py): every model template and conversation, the Jinja probes, and bad input.
import Foundation
import XCTest
@testable import LoRAShared
@testable import LoRAModel
@testable import LoRAEngine
@testable import LoRATrain
@testable import LoRATokenizer

/// Where two strings first differ, with escaped context on both sides, for failure messages.
func chatDiff(expected: String, actual: String) -> String {
    let e = Array(expected.unicodeScalars), a = Array(actual.unicodeScalars)
    var i = 0
    while i < min(e.count, a.count) && e[i] == a[i] { i += 1 }
    let line = e[..<i].filter { $0 == "\n" }.count + 1
    let column = i - (e[..<i].lastIndex(of: "\n").map { $0 + 1 } ?? 0) + 1
    func around(_ s: [Unicode.Scalar]) -> String {
        let lo = max(0, i - 50), hi = min(s.count, i + 50)
        var v = String.UnicodeScalarView()
        v.append(contentsOf: s[lo..<hi])
        return (lo > 0 ? "…" : "") + String(v).debugDescription + (hi < s.count ? "…" : "")
    }
    return "first difference at code point \(i) (expected line \(line), column \(column)); lengths \(e.count) vs \(a.count)\n"
        + "  expected: \(around(e))\n  actual:   \(around(a))"
}

/// Records whether a template read the clock (a fixture case without a pinned instant must not).
final class ClockProbe: @unchecked Sendable {
    private let lock = NSLock()
    private var read = false
    func mark() { lock.lock(); read = true; lock.unlock() }
    var wasRead: Bool { lock.lock(); defer { lock.unlock() }; return read }
}

final class ChatTemplateTests: XCTestCase {
    struct Case {
        let label: String
        let source: String
        let messages: [JSONValue]
        let addGenerationPrompt: Bool
        let variables: [String: JSONValue]
        let now: Double?
        let expected: String?
        let errorType: String?
        let error: String?
    }

    static func load(_ file: String, key: String) throws -> [JSONValue] {
        let data = try Data(contentsOf: URL(fileURLWithPath: Fixtures.path("chat/\(file)")))
        guard let list = try JSONParser().parse(data)[key]?.arrayValue else { throw NSError(domain: "fixture \(file) has no \(key)", code: 1) }
        return list
    }

    static func parseCase(_ c: JSONValue, label: String, source: String) -> Case {
        var vars: [String: JSONValue] = [:]
        for e in c["variables"]?.objectValue?.entries ?? [] { vars[e.key] = e.value }
        return Case(label: label, source: source, messages: c["messages"]?.arrayValue ?? [],
                    addGenerationPrompt: c["add_generation_prompt"]?.boolValue ?? false, variables: vars,
                    now: c["now"]?.doubleValue, expected: c["expected"]?.stringValue,
                    errorType: c["error_type"]?.stringValue, error: c["error"]?.stringValue)
    }

    /// Runs one fixture case; returns a failure description or nil. A case renders at its pinned instant
    /// ("now", formatted as a UTC wall clock, as the generator does), so no result depends on the day or the
    /// time zone the tests run in; a case without one that reads the clock is refused.
    func check(_ c: Case, template cached: ChatTemplate? = nil) -> String? {
        let result: Result<String, Error>
        let clockRead = ClockProbe()
        do {
            var t = try cached ?? ChatTemplate(c.source, name: "snippet")
            if let now = c.now {
                t.now = { Date(timeIntervalSince1970: now) }
                t.timeZone = TimeZone(identifier: "UTC")!
            } else {
                t.now = { clockRead.mark(); return Date() }
            }
            result = .success(try t.render(messages: c.messages, addGenerationPrompt: c.addGenerationPrompt, variables: c.variables))
        } catch {
            result = .failure(error)
        }
        if clockRead.wasRead {
            return "the template reads the clock (strftime_now) but the case has no pinned \"now\": regenerate the fixtures with scripts/gen_chat_fixtures.py"
        }
        switch (result, c.expected) {
        case (.success(let out), let exp?):
            return out == exp && out.unicodeScalars.elementsEqual(exp.unicodeScalars) ? nil : chatDiff(expected: exp, actual: out)
        case (.failure(let err), let exp?):
            return "expected \(exp.debugDescription), got error: \(err)"
        case (.success(let out), nil):
            return "expected \(c.errorType ?? "an error"): \(c.error ?? ""), got \(out.debugDescription)"
        case (.failure(let err), nil):
            guard let e = err as? ChatTemplateError else { return "unexpected error type: \(err)" }
            switch (c.errorType ?? "", e) {
            case ("TemplateError", .raised(_, _, _, let m)):
                return m == c.error ? nil : "raise_exception message \(m.debugDescription) != \(String(describing: c.error?.debugDescription))"
            case ("TemplateSyntaxError", .syntax), ("TemplateSyntaxError", .unsupported), ("TemplateAssertionError", .unsupported):
                return nil
            case ("TemplateError", _), ("TemplateSyntaxError", _), ("TemplateAssertionError", _):
                return "expected \(c.errorType!) (\(c.error ?? "")), got \(e)"
            case (_, .render(_, _, _, let m)):
                // Python's own exceptions (TypeError, UndefinedError…): we give the same message.
                return m.contains(c.error ?? "") ? nil : "expected \(c.errorType!): \(c.error ?? ""), got \(e)"
            default:
                return "expected \(c.errorType ?? ""): \(c.error ?? ""), got \(e)"
            }
        }
    }

    func testModelTemplatesMatchTransformers() throws {
        var templates: [String: ChatTemplate] = [:]
        var failures: [String] = []
        var perTemplate: [String: (pass: Int, total: Int)] = [:]
        let cases = try ChatTemplateTests.load("cases.json", key: "cases")
        XCTAssertGreaterThan(cases.count, 150)
        for raw in cases {
            let name = raw["template"]!.stringValue!
            if templates[name] == nil {
                let src = try String(contentsOfFile: Fixtures.path("chat/\(name).jinja"), encoding: .utf8)
                templates[name] = try ChatTemplate(src, name: name)
            }
            let c = ChatTemplateTests.parseCase(raw, label: "\(name) \(raw["name"]!.stringValue!)", source: "")
            let failure = check(c, template: templates[name])
            perTemplate[name, default: (0, 0)].total += 1
            if let f = failure { failures.append("\(c.label): \(f)") } else { perTemplate[name]!.pass += 1 }
        }
        for (name, r) in perTemplate.sorted(by: { $0.key < $1.key }) { print("chat template \(name): \(r.pass)/\(r.total) cases match") }
        let files = try FileManager.default.contentsOfDirectory(atPath: Fixtures.path("chat")).filter { $0.hasSuffix(".jinja") }
        XCTAssertEqual(Set(perTemplate.keys), Set(files.map { String($0.dropLast(".jinja".count)) }), "every template has cases")
        XCTAssertTrue(["qwen3", "phi3.5", "gemma2", "gemma3", "qwen2.5", "llama3.1"].allSatisfy { perTemplate[$0] != nil })
        XCTAssertTrue(failures.isEmpty, "\(failures.count) of \(cases.count) cases differ from transformers:\n" + failures.joined(separator: "\n\n"))
    }

    func testJinjaSnippetsMatchTransformers() throws {
        let snippets = try ChatTemplateTests.load("snippets.json", key: "snippets")
        XCTAssertGreaterThan(snippets.count, 100)
        var failures: [String] = []
        for raw in snippets {
            let src = raw["template"]!.stringValue!
            let c = ChatTemplateTests.parseCase(raw, label: src.debugDescription, source: src)
            if let f = check(c) { failures.append("\(c.label): \(f)") }
        }
        XCTAssertTrue(failures.isEmpty, "\(failures.count) of \(snippets.count) snippets differ from Jinja:\n" + failures.joined(separator: "\n\n"))
    }

    // MARK: Hand-written checks of the expression language and whitespace control

    func render(_ src: String, _ vars: [String: JSONValue] = [:], messages: [JSONValue] = [], file: StaticString = #filePath, line: UInt = #line) -> String {
        do {
            return try ChatTemplate(src).render(messages: messages, addGenerationPrompt: false, variables: vars)
        } catch {
            XCTFail("\(src.debugDescription): \(error)", file: file, line: line)
            return ""
        }
    }

    func testExpressions() {
        XCTAssertEqual(render("{{ 1 + 2 * 3 }}|{{ (1 + 2) * 3 }}|{{ 10 - 2 - 3 }}|{{ 2 ** 3 ** 2 }}"), "7|9|5|64")
        XCTAssertEqual(render("{{ 'a' ~ (1 + 2) }}|{{ -3|abs }}|{{ not 0 and 1 }}|{{ (1 - 2) ~ 'x' }}"), "a3|3|1|-1x")
        // `~` binds tighter than `+`, as in Jinja: 'a' ~ 1 + 2 is ('a' ~ 1) + 2, a TypeError.
        assertChatError("{{ 'a' ~ 1 + 2 }}", contains: ["1:12", "can only concatenate str"])
        XCTAssertEqual(render("{{ x.y[1]['z'] }}", ["x": try! jsonObject(#"{"y": [0, {"z": "deep"}]}"#)]), "deep")
        XCTAssertEqual(render("{{ s[::-1] }}{{ s[1:] }}{{ s[:1] }}", ["s": .string("abc")]), "cbabca")
        XCTAssertEqual(render("{{ 'x' if a is defined and a else 'y' }}"), "y")
        XCTAssertEqual(render("{{ [1, 2, 3] | select('odd') | map('string') | join('+') }}"), "1+3")
        XCTAssertEqual(render("{{ {'b': 1, 'a': [1, 'é']} | tojson }}"), #"{"b": 1, "a": [1, "é"]}"#)
        XCTAssertEqual(render("{% set ns = namespace(n=0) %}{% for i in range(4) %}{% set ns.n = ns.n + i %}{% endfor %}{{ ns.n }}"), "6")
    }

    func testWhitespaceControl() {
        // trim_blocks drops the newline after a block tag; lstrip_blocks the indentation before it.
        XCTAssertEqual(render("{% for i in [1, 2] %}\n    {% if i %}\n{{ i }}\n    {% endif %}\n{% endfor %}"), "1\n2\n")
        // Output tags are neither trimmed nor lstripped…
        XCTAssertEqual(render("  {{ 1 }}\n"), "  1")
        // …but `-` strips all whitespace (newlines included) on its side; `+` keeps what lstrip would remove.
        XCTAssertEqual(render("a \n\t{{- 1 -}}\n\n b"), "a1b")
        XCTAssertEqual(render("x\n  {%+ if true %}y{% endif %}"), "x\n  y")
        XCTAssertEqual(render("{% if true +%}\nz{% endif %}"), "\nz")
        // One trailing newline of the template is dropped (keep_trailing_newline=False); \r\n becomes \n.
        XCTAssertEqual(render("a\r\nb\n"), "a\nb")
    }

    func testParseOnceRenderMany() throws {
        let t = try ChatTemplate("{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}")
        let a = try t.render(messages: [try jsonObject(#"{"role": "user", "content": "one"}"#)], addGenerationPrompt: true)
        let b = try t.render(messages: [try jsonObject(#"{"role": "system", "content": "two"}"#)], addGenerationPrompt: false)
        XCTAssertEqual(a, "<user>one<assistant>")
        XCTAssertEqual(b, "<system>two")
    }

    func testTransformersDefaults() throws {
        // tools/documents are defined as none unless given; reasoning fields are aliased like transformers does.
        let t = try ChatTemplate("{{ tools is defined }}{{ tools is none }}{{ documents is none }}|{{ messages[0].thinking }}{{ messages[0].reasoning_content }}")
        let out = try t.render(messages: [try jsonObject(#"{"role": "assistant", "content": "x", "reasoning": "why"}"#)], addGenerationPrompt: false)
        XCTAssertEqual(out, "TrueTrueTrue|whywhy")
        XCTAssertEqual(try t.render(messages: [try jsonObject(#"{"role": "user"}"#)], addGenerationPrompt: false,
                                    variables: ["tools": .array([])]), "TrueFalseTrue|")
    }

    func testStrftimeNowUsesTheClock() throws {
        var t = try ChatTemplate("{{ strftime_now('%d %b %Y') }}|{{ strftime_now('%Y-%m-%d %H:%M') }}")
        t.now = { Date(timeIntervalSince1970: 1_721_995_200) }  // 2024-07-26 12:00 UTC
        t.timeZone = TimeZone(identifier: "UTC")!
        XCTAssertEqual(try t.render(messages: [], addGenerationPrompt: false), "26 Jul 2024|2024-07-26 12:00")
        t.timeZone = TimeZone(identifier: "Pacific/Kiritimati")!  // UTC+14: already the next day
        XCTAssertEqual(try t.render(messages: [], addGenerationPrompt: false), "27 Jul 2024|2024-07-27 02:00")
        t.timeZone = TimeZone(identifier: "Pacific/Pago_Pago")!  // UTC-11
        XCTAssertEqual(try t.render(messages: [], addGenerationPrompt: false), "26 Jul 2024|2024-07-26 01:00")
    }

    /// The live path: the real clock in the local time zone, as transformers renders it. Only the shape of
    /// the date is checked (and that it is today's, give or take a day around midnight).
    func testLlama32DateFromTheRealClock() throws {
        let src = try String(contentsOfFile: Fixtures.path("chat/llama3.2.jinja"), encoding: .utf8)
        let t = try ChatTemplate(src, name: "llama3.2")
        let out = try t.render(messages: [try jsonObject(#"{"role": "user", "content": "Hi"}"#)], addGenerationPrompt: true,
                               variables: ["bos_token": .string("<|begin_of_text|>")])
        let pattern = #"Today Date: ([0-9]{2}) (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) ([0-9]{4})\n"#
        let re = try NSRegularExpression(pattern: pattern)
        guard let m = re.firstMatch(in: out, range: NSRange(out.startIndex..., in: out)) else {
            return XCTFail("no 'Today Date: DD Mon YYYY' line in \(out.debugDescription)")
        }
        let found = (1...3).map { String(out[Range(m.range(at: $0), in: out)!]) }.joined(separator: " ")
        let fmt = DateFormatter()
        fmt.locale = Locale(identifier: "en_US_POSIX")
        fmt.dateFormat = "dd MMM yyyy"
        let days = [-1.0, 0, 1].map { fmt.string(from: Date(timeIntervalSinceNow: $0 * 86_400)) }
        XCTAssertTrue(days.contains(found), "rendered date \(found) is not within a day of today (\(days))")
    }

    // MARK: Bad input

    func assertChatError(_ src: String, _ vars: [String: JSONValue] = [:], contains parts: [String], file: StaticString = #filePath, line: UInt = #line) {
        do {
            let t = try ChatTemplate(src, name: "bad.jinja")
            let out = try t.render(messages: [], addGenerationPrompt: false, variables: vars)
            XCTFail("expected an error for \(src.debugDescription), got \(out.debugDescription)", file: file, line: line)
        } catch {
            let text = "\(error)"
            XCTAssertTrue(error is ChatTemplateError, "not a ChatTemplateError: \(text)", file: file, line: line)
            for p in parts { XCTAssertTrue(text.contains(p), "error '\(text)' should mention '\(p)'", file: file, line: line) }
        }
    }

    func testUnsupportedConstructsNameThemselvesAndTheirPosition() {
        assertChatError("ok\n  {% include 'x.jinja' %}", contains: ["bad.jinja:2:6", "unsupported", "include"])
        assertChatError("{% call m() %}x{% endcall %}", contains: ["bad.jinja:1:4", "unsupported tag '{% call %}'"])
        assertChatError("{{ x | groupby('a') }}", contains: ["bad.jinja:1:8", "filter 'groupby'", "Jinja built-in"])
        assertChatError("{{ x | frobnicate }}", contains: ["bad.jinja:1:8", "filter 'frobnicate'", "no such filter"])
        assertChatError("{% if x is escaped %}{% endif %}", contains: ["bad.jinja:1:12", "test 'escaped'"])
        assertChatError("{% for x in y recursive %}{% endfor %}", contains: ["1:15", "recursive"])
        assertChatError("{{ f(*args) }}", contains: ["1:6", "*args"])
        assertChatError("{{ 'abc'.center(9) }}", contains: ["1:16", "string method 'center'"])
        assertChatError("{{ '{:>5}'.format(1) }}", contains: ["1:18", "format specs"])
        assertChatError("{{ cycler(1, 2) }}", contains: ["1:10", "cycler"])
        assertChatError("{{ '%s!' % name }}", ["name": .string("x")], contains: ["1:10", "printf-style string formatting"])
    }

    func testMalformedTemplates() {
        assertChatError("Hello {{ name ", contains: ["bad.jinja:1:7", "unterminated '{{'"])
        assertChatError("a\n{% if x %}\nb", contains: ["bad.jinja:2:4", "'{% if %}' is never closed", "endif"])
        assertChatError("{% for x in y %}{% endif %}", contains: ["1:20", "unexpected '{% endif %}'", "endfor"])
        assertChatError("{% endfor %}", contains: ["1:4", "no open block"])
        assertChatError("{{ 'open }}", contains: ["1:4", "unterminated string"])
        assertChatError("{# never closed", contains: ["1:1", "comment"])
        assertChatError("{% frobnicate %}", contains: ["1:4", "unknown tag"])
        assertChatError("{% break %}", contains: ["outside of a loop"])
        assertChatError("{{ (1, 2] }}", contains: ["1:9", "unexpected ']'"])
        assertChatError("{{ 1 + }}", contains: ["1:8", "unexpected end of print statement"])
        assertChatError("{% set 1 = 2 %}", contains: ["1:8", "expected a name"])
    }

    func testRuntimeErrorsPointAtTheConstruct() {
        assertChatError("line\n  {{ raise_exception('Roles must alternate') }}", contains: ["bad.jinja:2:21", "raise_exception: Roles must alternate"])
        assertChatError("{{ missing.attr }}", contains: ["1:12", "'missing' is undefined"])
        assertChatError("{{ 1 // 0 }}", contains: ["1:6", "integer division or modulo by zero"])
        assertChatError("{{ 'a' + 1 }}", contains: ["1:8", "can only concatenate str"])
        assertChatError("{{ n * n }}", ["n": .int(Int64.max)], contains: ["integer overflow"])
        do {
            _ = try ChatTemplate("{{ raise_exception('boom') }}").render(messages: [], addGenerationPrompt: false)
            XCTFail("expected raise_exception to throw")
        } catch let e as ChatTemplateError {
            XCTAssertEqual(e.raisedMessage, "boom")
        } catch {
            XCTFail("wrong error \(error)")
        }
    }
}
