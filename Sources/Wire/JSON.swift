/// A JSON value (RFC 8259) with objects kept in file order, for the safetensors header.
///
/// Foundation's `JSONSerialization` forgets key order and silently keeps one of two duplicate
/// keys; a checkpoint header must reject duplicates, so we parse it ourselves.
indirect enum JSONValue {
    case object([(key: String, value: JSONValue)])
    case array([JSONValue])
    case string(String)
    /// A number written without fraction or exponent that fits in `Int`.
    case integer(Int)
    case number(Double)
    case boolean(Bool)
    case null

    /// Why text is not valid JSON: the problem and the byte offset where it was seen.
    struct SyntaxError: Error {
        var problem: String
        var offset: Int
        /// Set when the error is a repeated key, with the nesting depth of its object (0 = top level).
        var duplicateKey: String? = nil
        var depth = 0
    }

    /// Parses exactly one JSON value, surrounded by optional whitespace, from UTF-8 `text`.
    /// Duplicate keys in an object are an error.
    static func parse(_ text: [UInt8]) throws -> JSONValue {
        var parser = Parser(text: text)
        let value = try parser.value(depth: 0)
        parser.skipWhitespace()
        guard parser.position == text.count else { throw parser.fail("unexpected text after the JSON value") }
        return value
    }

    /// `s` as a JSON string literal, quotes included.
    static func quote(_ s: String) -> String {
        var out = "\""
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20:
                let digits = String(scalar.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - digits.count) + digits
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }

    private struct Parser {
        let text: [UInt8]
        var position = 0
        /// Nesting bound, so a hostile header cannot exhaust the stack.
        static let maximumDepth = 64

        func fail(_ problem: String) -> SyntaxError { SyntaxError(problem: problem, offset: position) }

        mutating func skipWhitespace() {
            while position < text.count, [0x20, 0x09, 0x0A, 0x0D].contains(text[position]) { position += 1 }
        }

        mutating func value(depth: Int) throws -> JSONValue {
            guard depth < Self.maximumDepth else { throw fail("nesting deeper than \(Self.maximumDepth)") }
            skipWhitespace()
            guard position < text.count else { throw fail("unexpected end of text") }
            switch text[position] {
            case UInt8(ascii: "{"): return try object(depth: depth)
            case UInt8(ascii: "["): return try array(depth: depth)
            case UInt8(ascii: "\""): return .string(try string())
            case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return try number()
            default:
                for (word, v) in [("true", JSONValue.boolean(true)), ("false", .boolean(false)), ("null", .null)]
                where text[position...].starts(with: word.utf8) {
                    position += word.utf8.count
                    return v
                }
                throw fail("unexpected byte 0x\(String(text[position], radix: 16))")
            }
        }

        mutating func expect(_ byte: UInt8, _ what: String) throws {
            skipWhitespace()
            guard position < text.count, text[position] == byte else { throw fail("expected \(what)") }
            position += 1
        }

        mutating func object(depth: Int) throws -> JSONValue {
            position += 1
            var entries: [(key: String, value: JSONValue)] = []
            var seen = Set<String>()
            skipWhitespace()
            if position < text.count, text[position] == UInt8(ascii: "}") {
                position += 1
                return .object(entries)
            }
            while true {
                skipWhitespace()
                guard position < text.count, text[position] == UInt8(ascii: "\"") else { throw fail("expected a string key") }
                let keyOffset = position
                let key = try string()
                guard seen.insert(key).inserted else {
                    throw SyntaxError(problem: "duplicate key \(JSONValue.quote(key))", offset: keyOffset,
                                      duplicateKey: key, depth: depth)
                }
                try expect(UInt8(ascii: ":"), "':'")
                entries.append((key, try value(depth: depth + 1)))
                skipWhitespace()
                guard position < text.count else { throw fail("unterminated object") }
                if text[position] == UInt8(ascii: "}") {
                    position += 1
                    return .object(entries)
                }
                try expect(UInt8(ascii: ","), "',' or '}'")
            }
        }

        mutating func array(depth: Int) throws -> JSONValue {
            position += 1
            var items: [JSONValue] = []
            skipWhitespace()
            if position < text.count, text[position] == UInt8(ascii: "]") {
                position += 1
                return .array(items)
            }
            while true {
                items.append(try value(depth: depth + 1))
                skipWhitespace()
                guard position < text.count else { throw fail("unterminated array") }
                if text[position] == UInt8(ascii: "]") {
                    position += 1
                    return .array(items)
                }
                try expect(UInt8(ascii: ","), "',' or ']'")
            }
        }

        mutating func string() throws -> String {
            position += 1  // opening quote
            var scalars = String.UnicodeScalarView()
            var runStart = position
            func flushRun(_ end: Int) {
                scalars.append(contentsOf: String(decoding: text[runStart..<end], as: UTF8.self).unicodeScalars)
            }
            while true {
                guard position < text.count else { throw fail("unterminated string") }
                let c = text[position]
                if c == UInt8(ascii: "\"") {
                    flushRun(position)
                    position += 1
                    return String(scalars)
                }
                if c < 0x20 { throw fail("control character in string") }
                if c != UInt8(ascii: "\\") {
                    position += 1
                    continue
                }
                flushRun(position)
                position += 1
                guard position < text.count else { throw fail("unterminated escape") }
                let e = text[position]
                position += 1
                switch e {
                case UInt8(ascii: "\""): scalars.append("\"")
                case UInt8(ascii: "\\"): scalars.append("\\")
                case UInt8(ascii: "/"): scalars.append("/")
                case UInt8(ascii: "b"): scalars.append("\u{08}")
                case UInt8(ascii: "f"): scalars.append("\u{0C}")
                case UInt8(ascii: "n"): scalars.append("\n")
                case UInt8(ascii: "r"): scalars.append("\r")
                case UInt8(ascii: "t"): scalars.append("\t")
                case UInt8(ascii: "u"):
                    var code = try hex4()
                    if (0xD800..<0xDC00).contains(code) {
                        guard text[position...].starts(with: "\\u".utf8) else { throw fail("unpaired surrogate") }
                        position += 2
                        let low = try hex4()
                        guard (0xDC00..<0xE000).contains(low) else { throw fail("invalid low surrogate") }
                        code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                    }
                    guard let scalar = Unicode.Scalar(code) else { throw fail("invalid code point \\u\(String(code, radix: 16))") }
                    scalars.append(scalar)
                default:
                    throw fail("invalid escape \\\(Character(Unicode.Scalar(e)))")
                }
                runStart = position
            }
        }

        mutating func hex4() throws -> UInt32 {
            guard text.count - position >= 4 else { throw fail("truncated \\u escape") }
            var v: UInt32 = 0
            for _ in 0..<4 {
                let c = text[position]
                let digit: UInt8
                switch c {
                case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = c - UInt8(ascii: "0")
                case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = c - UInt8(ascii: "a") + 10
                case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = c - UInt8(ascii: "A") + 10
                default: throw fail("invalid hex digit in \\u escape")
                }
                v = v << 4 | UInt32(digit)
                position += 1
            }
            return v
        }

        mutating func number() throws -> JSONValue {
            let start = position
            if text[position] == UInt8(ascii: "-") { position += 1 }
            let digitsStart = position
            while position < text.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(text[position]) { position += 1 }
            guard position > digitsStart else { throw fail("expected digits") }
            guard text[digitsStart] != UInt8(ascii: "0") || position - digitsStart == 1 else { throw fail("leading zero") }
            var integral = true
            if position < text.count, text[position] == UInt8(ascii: ".") {
                integral = false
                position += 1
                let f = position
                while position < text.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(text[position]) { position += 1 }
                guard position > f else { throw fail("expected digits after '.'") }
            }
            if position < text.count, text[position] == UInt8(ascii: "e") || text[position] == UInt8(ascii: "E") {
                integral = false
                position += 1
                if position < text.count, text[position] == UInt8(ascii: "+") || text[position] == UInt8(ascii: "-") { position += 1 }
                let e = position
                while position < text.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(text[position]) { position += 1 }
                guard position > e else { throw fail("expected exponent digits") }
            }
            let literal = String(decoding: text[start..<position], as: UTF8.self)
            if integral, let i = Int(literal) { return .integer(i) }
            guard let d = Double(literal) else { throw SyntaxError(problem: "invalid number \(literal)", offset: start) }
            return .number(d)
        }
    }
}
