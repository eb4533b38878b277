import Foundation
import Testing
@testable import Training

/// `ambient annotate --floor`: annotations below the floor are raised to it, the others kept,
/// and specs written before the option existed still decode (without a floor).
@Suite struct AnnotationFloorTests {
    func spec(floor: Double?) -> AnnotationSpec {
        var s = AnnotationSpec(dataset: "d", classifierConfig: smallConfig(objective: .classifier), classifierRun: "c", classifierHash: "h",
                               grid: 16, gridDistribution: .lognormal, draws: 4, span: 4, eps: 0.05, seed: 0, shards: 2)
        s.floor = floor
        return s
    }

    @Test func floorRaisesOnlyTheLevelsBelowIt() throws {
        let levels = [0.002, 0.5, 1.3799999952316284, 1.38, 2.27, 80]
        #expect(levels.map(spec(floor: 1.38).floored) == [1.38, 1.38, 1.38, 1.38, 2.27, 80])
        #expect(levels.map(spec(floor: nil).floored) == levels)
        #expect(spec(floor: 1.38).note.hasSuffix(", floored at 1.38") && !spec(floor: nil).note.contains("floored"))
    }

    @Test func specsRoundTripAndOldSpecsDecode() throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        for floor in [nil, 1.38] {
            let s = spec(floor: floor)
            #expect(try JSONDecoder().decode(AnnotationSpec.self, from: encoder.encode(s)) == s)
        }
        // What a coordinator of an earlier version sends: no "floor" key.
        var old = try JSONSerialization.jsonObject(with: encoder.encode(spec(floor: 1.38))) as! [String: Any]
        old["floor"] = nil
        let decoded = try JSONDecoder().decode(AnnotationSpec.self, from: JSONSerialization.data(withJSONObject: old))
        #expect(decoded == spec(floor: nil))
    }
}
