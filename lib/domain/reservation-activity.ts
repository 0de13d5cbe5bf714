/**
 * This process's flash-sale reservations in flight, for the order drain that runs beside them
 * when one node runs every actor (README "The drain gives way to the sale").
 *
 * A sale's opening is the few hundred milliseconds in which every request is a live
 * reservation: the limiter, the script, the confirmed publish, each win's answer. Its orders
 * are already safe in the queue, so writing them then only takes the CPU the opening needs:
 * the gateway's lane marks each live request here from the limiter on, the stock actor each
 * reservation (a stock node may have no gateway), and the order drain of the same process
 * holds its messages while any is running (seckill.batch_hold_ms at most). An order node of
 * its own never sees one here, so it never holds.
 */
export class ReservationActivity {
	private inFlight = 0;
	private lastEnded = -Infinity;

	/** A reservation started; `end` must follow, whatever its outcome. */
	begin(): void {
		this.inFlight++;
	}

	end(): void {
		this.inFlight--;
		this.lastEnded = performance.now();
	}

	/** Whether a reservation is running here, or ended within the last `quietMs`. */
	busy(quietMs: number, now = performance.now()): boolean {
		return this.inFlight > 0 || now - this.lastEnded < quietMs;
	}
}

/** The process's one tally: its stock actor writes it, its order drain reads it. */
export const reservationActivity = new ReservationActivity();
