/* Spherical interpolation between two initial noises (VAPO-MATH section 5).
 * Both inputs are normalised to unit vectors, interpolated along the great
 * circle by angle (as scipy.spatial.geometric_slerp does) and rescaled to a
 * fixed norm; callers pass norm = omega * sqrt(dim), the typical length of a
 * N(0, omega^2 I) sample, so every frame looks like prior noise to the ODE. */
#ifndef VAPO_INTERP_H
#define VAPO_INTERP_H

/* out (dim floats) = norm * slerp(x0/|x0|, x1/|x1|; s). s = 0 and s = 1 give
 * the rescaled endpoints exactly; other s (also outside [0, 1]) move at a
 * constant angular rate. Never produces NaN from finite inputs:
 *  - nearly parallel inputs (angle < 1e-6) use normalised linear interpolation;
 *  - nearly antipodal inputs, where the great circle is not unique, turn
 *    through a fixed direction orthogonal to x0 (dim 1: jumps at s = 0.5);
 *  - a zero input takes the direction of the other one; two zeros give zeros. */
void vapo_slerp(int dim, const float *x0, const float *x1, double s, double norm, float *out);

/* frames interpolants for s = linspace(0, 1, frames) (frames = 1: s = 0 only),
 * written one after another to out (frames * dim floats). */
void vapo_slerp_frames(int dim, const float *x0, const float *x1, int frames, double norm, float *out);

#endif
