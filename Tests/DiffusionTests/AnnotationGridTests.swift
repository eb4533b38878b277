import Diffusion
import Foundation
import Testing

/// The annotation grid (SPEC O5, `Annotator`): where its levels lie sets how far the smoothing
/// lags in sigma. The smoothing rule is tested on synthetic trajectories with a known crossing.
@Suite struct AnnotationGridTests {
    /// A corrupted sample's raw p(sigma): 0 below `sigma0` (the classifier is sure), the balanced
    /// prior 0.5 above (it cannot tell), as for a classifier trained half clean.
    static func step(at sigma0: Double, on grid: [Double]) -> [Double] { grid.map { $0 < sigma0 ? 0 : 0.5 } }

    @Test func logNormalGridHoldsTheTrainingQuantiles() {
        let schedule = EDMSchedule()
        let grid = Annotator.logNormalGrid(count: 2048, schedule: schedule)
        #expect(grid.count == 2048)
        #expect(zip(grid, grid.dropFirst()).allSatisfy { $0 < $1 }, "ascending")
        // Half the levels below exp(pMean), 84.1% below exp(pMean + pStd).
        let belowMedian = grid.filter { $0 < exp(schedule.pMean) }.count
        let belowOneStd = grid.filter { $0 < exp(schedule.pMean + schedule.pStd) }.count
        #expect(belowMedian == 1024)
        #expect(abs(Double(belowOneStd) / 2048 - 0.8413) < 0.001, "\(belowOneStd)")
        // The extreme levels are the quantiles at 0.5/2048 and 1 - 0.5/2048 (z = -/+3.49).
        let zLow = (log(grid[0]) - schedule.pMean) / schedule.pStd, zHigh = (log(grid[2047]) - schedule.pMean) / schedule.pStd
        #expect(abs(0.5 * erfc(-zLow / 2.0.squareRoot()) / (0.5 / 2048) - 1) < 1e-6, "\(zLow)")
        #expect(abs(0.5 * erfc(zHigh / 2.0.squareRoot()) / (0.5 / 2048) - 1) < 1e-6, "\(zHigh)")
    }

    /// On the default grid the smoothing lags little where blur and JPEG annotations land (the
    /// paper: 0.2-2.8); on 256 log-spaced levels it lags a factor ~4.6 everywhere, which is why
    /// the default changed.
    @Test(arguments: [0.1, 0.3, 1.0, 2.0])
    func smoothingLagsLittleOnTheDefaultGrid(sigma0: Double) {
        let schedule = EDMSchedule()
        let dense = Annotator(grid: AnnotationGrid.lognormal.levels(count: nil, schedule: schedule, sigmaMax: 80))
        let sparse = Annotator(grid: AnnotationGrid.loguniform.levels(count: nil, schedule: schedule, sigmaMax: 80))
        let a = dense.sigmaMin(trajectory: Self.step(at: sigma0, on: dense.grid))
        let b = sparse.sigmaMin(trajectory: Self.step(at: sigma0, on: sparse.grid))
        #expect(a >= sigma0 && a / sigma0 < 1.3, "lognormal grid: crossing at \(sigma0) annotated \(a)")
        #expect(b / sigma0 > 4 && b / sigma0 < 5.2, "loguniform grid: crossing at \(sigma0) annotated \(b)")
    }

    @Test func neverCrossingGivesSigmaMaxAndCleanGivesTheBottom() {
        let annotator = Annotator(grid: Annotator.logNormalGrid(count: 64, schedule: EDMSchedule()), sigmaMax: 80)
        #expect(annotator.sigmaMin(trajectory: [Double](repeating: 0.3, count: 64)) == 80)
        #expect(annotator.sigmaMin(trajectory: [Double](repeating: 0.9, count: 64)) == annotator.grid[0])
    }
}
