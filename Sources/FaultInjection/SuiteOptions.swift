/// The suite's options after validation. The command line gives them as strings so that every
/// bad value gets the suite's own message (and exit status 2), as the bash script did.
public struct SuiteOptions: Equatable, Sendable {
    public var scenarios: [Scenario]
    public var repeatCount: Int
    public var seed: Int
    public var workers: Int
    public var steps: Int

    public init(scenarios: [Scenario], repeatCount: Int, seed: Int, workers: Int, steps: Int) {
        self.scenarios = scenarios; self.repeatCount = repeatCount; self.seed = seed; self.workers = workers; self.steps = steps
    }

    public struct Invalid: Error, Equatable, CustomStringConvertible {
        public let description: String
        public init(_ description: String) { self.description = description }
    }

    /// `scenarios`: the `--scenario` values (each may be a comma list); none means all.
    /// `seed` nil: `randomSeed` is used. Defaults: 1 repeat, 3 workers, 1000 steps.
    public static func validate(scenarios: [String], repeatCount: String?, seed: String?, workers: String?, steps: String?,
                                randomSeed: () -> Int) throws(Invalid) -> SuiteOptions {
        var chosen: [Scenario] = []
        for name in scenarios.flatMap({ $0.split(separator: ",", omittingEmptySubsequences: false) }) {
            guard let s = Scenario(rawValue: String(name)) else { throw Invalid("unknown scenario '\(name)' (--list)") }
            chosen.append(s)
        }
        if chosen.isEmpty { chosen = Scenario.allCases }
        guard let r = positive(repeatCount ?? "1") else { throw Invalid("--repeat must be a positive integer") }
        guard let w = positive(workers ?? "3"), w >= 2 else { throw Invalid("--workers must be >= 2") }
        guard let n = natural(steps ?? "1000"), n >= 400 else { throw Invalid("--steps must be >= 400") }
        let s: Int
        if let seed {
            guard let v = natural(seed), v < 1 << 62 else { throw Invalid("--seed must be a non-negative integer") }
            s = v
        } else {
            s = randomSeed()
        }
        return SuiteOptions(scenarios: chosen, repeatCount: r, seed: s, workers: w, steps: n)
    }

    /// Decimal digits only (no sign, no spaces), small enough for an Int.
    static func natural(_ text: String) -> Int? {
        guard !text.isEmpty, text.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else { return nil }
        return Int(text)
    }

    static func positive(_ text: String) -> Int? {
        guard let v = natural(text), v > 0 else { return nil }
        return v
    }
}
