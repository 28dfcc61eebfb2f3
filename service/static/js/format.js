// Number formatting shared by the views.

const percentFormat = new Intl.NumberFormat("en", {
  style: "percent",
  minimumFractionDigits: 1,
  maximumFractionDigits: 1,
});

const compactFormat = new Intl.NumberFormat("en", {
  notation: "compact",
  maximumFractionDigits: 1,
});

/** 0.9312 -> "93.1%". */
export const percent = (probability) => percentFormat.format(probability);

/** 4718592 -> "4.7M". */
export const compact = (count) => compactFormat.format(count);

/** A difference of two probabilities in percentage points, signed: "−12.3 pts". */
export function points(difference) {
  const value = Math.abs(difference * 100).toFixed(1);
  if (value === "0.0") return "±0.0 pts";
  return `${difference < 0 ? "−" : "+"}${value} pts`;
}

/** Milliseconds, rounded for display. */
export const milliseconds = (ms) => (ms < 10 ? `${ms.toFixed(1)} ms` : `${Math.round(ms)} ms`);
