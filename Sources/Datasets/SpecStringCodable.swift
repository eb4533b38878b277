import Foundation

/// A value stored as the spec string the command line takes ("noise:0.5", "gmm:dim=8"), in
/// run directories and configuration files alike. Decoding also accepts an earlier, non-string
/// encoding (`decodeLegacy`), so older run directories still load.
public protocol SpecStringCodable: Codable, CustomStringConvertible {
    /// Parses the command-line form; `description` writes it.
    static func parse(_ text: String) throws -> Self
    /// Reads the encoding used before the string form.
    static func decodeLegacy(from decoder: Decoder) throws -> Self
}

extension SpecStringCodable {
    public init(from decoder: Decoder) throws {
        if let single = try? decoder.singleValueContainer(), let text = try? single.decode(String.self) {
            do {
                self = try Self.parse(text)
            } catch {
                throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "\(error)"))
            }
            return
        }
        self = try Self.decodeLegacy(from: decoder)
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(description)
    }
}
