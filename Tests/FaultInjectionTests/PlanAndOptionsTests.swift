import FaultInjection
import Testing

@Suite struct FaultPlanTests {
    @Test func splitMix64KnownAnswer() {
        // The reference implementation (Vigna, splitmix64.c) seeded with 1234567.
        var rng = SplitMix64(seed: 1_234_567)
        #expect([rng.next(), rng.next(), rng.next()] == [6_457_827_717_110_365_317, 3_203_168_211_198_807_973, 9_817_491_932_198_370_423])
    }

    @Test func theSeedReproducesThePlan() {
        for scenario in Scenario.allCases {
            for seed in [0, 1, 451_244, 999_999] {
                let a = FaultPlan(scenario: scenario, seed: seed, workers: 3, steps: 1000)
                #expect(a == FaultPlan(scenario: scenario, seed: seed, workers: 3, steps: 1000))
            }
        }
        let plans = (1...50).map { FaultPlan(scenario: .workerKill, seed: $0, workers: 3, steps: 1000) }
        #expect(Set(plans.map(\.victim)) == [1, 2, 3])
        #expect(Set(plans.map(\.step)).count > 40)
    }

    @Test func choicesStayInTheScriptsRanges() {
        for seed in 0..<500 {
            for (scenario, range) in [(Scenario.workerKill, 30...600), (.reducerKill, 30...600), (.ownerOptimizerKill, 30...600), (.workerStop, 30...500),
                                      (.workerRestart, 30...500), (.linkCut, 30...500), (.coordinatorKill, 51...600),
                                      (.checkpointBitflip, 105...600)] {
                let p = FaultPlan(scenario: scenario, seed: seed, workers: 4, steps: 1000)
                #expect(range.contains(p.step))
                #expect((1...4).contains(p.victim))
                #expect((3...6).contains(p.pause))
                #expect((200...249).contains(p.netPrefix))
                #expect((0...7).contains(p.flipBit))
                #expect((0..<1234).contains(p.flipOffset(size: 1234)))
            }
        }
    }

    @Test func bitFlipChangesExactlyOneBitAndUndoes() {
        let original: [UInt8] = [0x00, 0xFF, 0x5A, 0x81]
        var bytes = original
        flipBit(&bytes, offset: 2, bit: 0)
        #expect(bytes == [0x00, 0xFF, 0x5B, 0x81])
        flipBit(&bytes, offset: 2, bit: 0)
        #expect(bytes == original)
        flipBit(&bytes, offset: 1, bit: 7)
        #expect(bytes == [0x00, 0x7F, 0x5A, 0x81])
        let plan = FaultPlan(scenario: .checkpointBitflip, seed: 42, workers: 3, steps: 1000)
        var c = original
        flipBit(&c, offset: plan.flipOffset(size: c.count), bit: plan.flipBit)
        #expect(zip(c, original).map { ($0 ^ $1).nonzeroBitCount }.reduce(0, +) == 1)
    }
}

@Suite struct SuiteOptionsTests {
    func validate(_ scenarios: [String] = [], repeatCount: String? = nil, seed: String? = "7", workers: String? = nil,
                  steps: String? = nil) throws -> SuiteOptions {
        try SuiteOptions.validate(scenarios: scenarios, repeatCount: repeatCount, seed: seed, workers: workers, steps: steps,
                                  randomSeed: { 123 })
    }

    @Test func defaults() throws {
        let o = try validate(seed: nil)
        #expect(o == SuiteOptions(scenarios: Scenario.allCases, repeatCount: 1, seed: 123, workers: 3, steps: 1000))
    }

    @Test func scenariosRepeatableAndCommaLists() throws {
        let o = try validate(["worker-kill,coordinator-kill", "link-cut"], repeatCount: "3", seed: "0", workers: "2", steps: "400")
        #expect(o.scenarios == [.workerKill, .coordinatorKill, .linkCut])
        #expect(o.repeatCount == 3 && o.seed == 0 && o.workers == 2 && o.steps == 400)
        #expect(Scenario.allCases.map(\.rawValue) == ["worker-kill", "worker-stop", "worker-restart", "coordinator-kill",
                                                      "coordinator-kill-checkpoint", "checkpoint-bitflip", "link-cut", "disk-full",
                                                      "reducer-kill", "owner-optimizer-kill"])
    }

    @Test func badValuesAreRejectedWithTheScriptsMessages() {
        let cases: [(() throws -> SuiteOptions, String)] = [
            ({ try validate(["nope"]) }, "unknown scenario 'nope' (--list)"),
            ({ try validate(["worker-kill,"]) }, "unknown scenario '' (--list)"),
            ({ try validate(repeatCount: "0") }, "--repeat must be a positive integer"),
            ({ try validate(repeatCount: "2x") }, "--repeat must be a positive integer"),
            ({ try validate(workers: "1") }, "--workers must be >= 2"),
            ({ try validate(workers: "-3") }, "--workers must be >= 2"),
            ({ try validate(steps: "10") }, "--steps must be >= 400"),
            ({ try validate(steps: "+500") }, "--steps must be >= 400"),
            ({ try validate(seed: "-1") }, "--seed must be a non-negative integer"),
            ({ try validate(seed: "99999999999999999999999") }, "--seed must be a non-negative integer"),
        ]
        for (call, message) in cases {
            #expect(throws: SuiteOptions.Invalid(message)) { _ = try call() }
        }
    }
}
