/// A configuration value that cannot work; `message` says which and why.
public struct ConfigurationError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public init(message: String) { self.message = message }
    public var description: String { message }
}
