/// A Python literal of the small kind found in NPY headers: strings, integers, booleans, `None`,
/// tuples, lists and dicts with string keys.
///
/// The parser accepts what `repr` writes and what people write by hand: either quote style,
/// whitespace anywhere, trailing commas, `(5,)` and `()`, Python 2 long suffixes (`3L`).
indirect enum PythonLiteral: Equatable {
    case string(String)
    case integer(Int)
    case boolean(Bool)
    case none
    case tuple([PythonLiteral])
    case list([PythonLiteral])
    case dict([String: PythonLiteral])

    /// Why a literal could not be parsed: the problem and the byte offset where it was seen.
    struct SyntaxError: Error {
        var problem: String
        var offset: Int
    }

    /// Parses exactly one literal, surrounded by optional whitespace, from `text`.
    static func parse(_ text: [UInt8]) throws -> PythonLiteral {
        var parser = Parser(text: text)
        let value = try parser.value(depth: 0)
        parser.skipWhitespace()
        guard parser.position == text.count else {
            throw SyntaxError(problem: "unexpected text after the literal", offset: parser.position)
        }
        return value
    }

    private struct Parser {
        let text: [UInt8]
        var position = 0

        /// Nesting bound, so a hostile header cannot exhaust the stack.
        static let maximumDepth = 32

        mutating func skipWhitespace() {
            while position < text.count, [0x20, 0x09, 0x0A, 0x0D].contains(text[position]) { position += 1 }
        }

        func fail(_ problem: String) -> SyntaxError { SyntaxError(problem: problem, offset: position) }

        mutating func value(depth: Int) throws -> PythonLiteral {
            guard depth < Self.maximumDepth else { throw fail("nesting deeper than \(Self.maximumDepth)") }
            skipWhitespace()
            guard position < text.count else { throw fail("unexpected end of header") }
            switch text[position] {
            case UInt8(ascii: "'"), UInt8(ascii: "\""): return .string(try string())
            case UInt8(ascii: "("): return .tuple(try sequence(closing: UInt8(ascii: ")"), depth: depth))
            case UInt8(ascii: "["): return .list(try sequence(closing: UInt8(ascii: "]"), depth: depth))
            case UInt8(ascii: "{"): return .dict(try dict(depth: depth))
            case UInt8(ascii: "-"), UInt8(ascii: "+"), UInt8(ascii: "0")...UInt8(ascii: "9"): return .integer(try integer())
            default:
                for (word, literal) in [("True", PythonLiteral.boolean(true)), ("False", .boolean(false)), ("None", .none)]
                where text[position...].starts(with: word.utf8) {
                    position += word.utf8.count
                    return literal
                }
                throw fail("unexpected character '\(Character(Unicode.Scalar(text[position])))'")
            }
        }

        mutating func string() throws -> String {
            let quote = text[position]
            position += 1
            var bytes: [UInt8] = []
            while position < text.count, text[position] != quote {
                if text[position] == UInt8(ascii: "\\") {
                    position += 1
                    guard position < text.count else { break }
                }
                bytes.append(text[position])
                position += 1
            }
            guard position < text.count else { throw fail("unterminated string") }
            position += 1
            return String(decoding: bytes, as: UTF8.self)
        }

        mutating func integer() throws -> Int {
            var negative = false
            if text[position] == UInt8(ascii: "-") || text[position] == UInt8(ascii: "+") {
                negative = text[position] == UInt8(ascii: "-")
                position += 1
            }
            var value = 0
            var digits = 0
            while position < text.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(text[position]) {
                let (times10, o1) = value.multipliedReportingOverflow(by: 10)
                let (next, o2) = times10.addingReportingOverflow(Int(text[position] - UInt8(ascii: "0")))
                guard !o1, !o2 else { throw fail("integer too large") }
                value = next
                digits += 1
                position += 1
            }
            guard digits > 0 else { throw fail("expected digits") }
            if position < text.count, text[position] == UInt8(ascii: "L") || text[position] == UInt8(ascii: "l") {
                position += 1
            }
            return negative ? -value : value
        }

        /// Elements separated by commas, an optional trailing comma, then `closing`.
        mutating func sequence(closing: UInt8, depth: Int) throws -> [PythonLiteral] {
            position += 1
            var items: [PythonLiteral] = []
            while true {
                skipWhitespace()
                guard position < text.count else { throw fail("unterminated tuple or list") }
                if text[position] == closing {
                    position += 1
                    return items
                }
                items.append(try value(depth: depth + 1))
                skipWhitespace()
                guard position < text.count else { throw fail("unterminated tuple or list") }
                if text[position] == UInt8(ascii: ",") {
                    position += 1
                } else if text[position] != closing {
                    throw fail("expected ',' or '\(Character(Unicode.Scalar(closing)))'")
                }
            }
        }

        mutating func dict(depth: Int) throws -> [String: PythonLiteral] {
            position += 1
            var entries: [String: PythonLiteral] = [:]
            while true {
                skipWhitespace()
                guard position < text.count else { throw fail("unterminated dict") }
                if text[position] == UInt8(ascii: "}") {
                    position += 1
                    return entries
                }
                guard text[position] == UInt8(ascii: "'") || text[position] == UInt8(ascii: "\"") else {
                    throw fail("expected a string key")
                }
                let keyOffset = position
                let key = try string()
                skipWhitespace()
                guard position < text.count, text[position] == UInt8(ascii: ":") else { throw fail("expected ':'") }
                position += 1
                let item = try value(depth: depth + 1)
                guard entries[key] == nil else {
                    throw SyntaxError(problem: "duplicate key '\(key)'", offset: keyOffset)
                }
                entries[key] = item
                skipWhitespace()
                guard position < text.count else { throw fail("unterminated dict") }
                if text[position] == UInt8(ascii: ",") {
                    position += 1
                } else if text[position] != UInt8(ascii: "}") {
                    throw fail("expected ',' or '}'")
                }
            }
        }
    }
}
