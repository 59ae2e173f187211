package diffusion_test

import (
	"fmt"

	"ddpm/diffusion"
	"ddpm/internal/rng"
)

// The paper's schedule, one training example (eq. 4 and eq. 14), and sampling with Algorithm 2.
// The "network" here predicts zero noise; a trained U-Net goes in its place.
func Example() {
	s, err := diffusion.NewSchedule(diffusion.DefaultScheduleConfig()) // linear 1e-4 .. 0.02, T = 1000
	if err != nil {
		panic(err)
	}

	// Training: x_t = sqrt(alphabar_t) x0 + sqrt(1 - alphabar_t) eps for one 1x2x2 image at t = 499.
	x0 := []float32{-1, 0, 0.5, 1}
	eps := []float32{0.5, -1, 0, 2}
	xt := make([]float32, len(x0))
	s.QSample(xt, x0, eps, []int32{499}, 1)
	fmt.Printf("x_t = %.4f\n", xt)

	model := func(xt []float32, t []int32, batch int) []float32 { return make([]float32, len(xt)) }
	loss := make([]float64, 1)
	diffusion.LSimple(loss, eps, model(xt, []int32{499}, 1), 1)
	fmt.Printf("L_simple = %.4f\n", loss[0])

	// Sampling: image i's noise is the stream (seed 7, sampling, i), whatever the batch.
	x := s.Sample(model, diffusion.Shape{1, 1, 2, 2}, diffusion.StreamNoise(7, rng.PurposeSampling, 0), diffusion.ReverseOptions{})
	pixels := make([]uint8, len(x))
	diffusion.ToUint8(pixels, x)
	fmt.Println("8-bit sample:", pixels)
	// Output:
	// x_t = [0.1996 -0.9599 0.1402 2.2001]
	// L_simple = 1.3125
	// 8-bit sample: [14 190 66 255]
}

// The sinusoidal timestep embedding fed to the U-Net, computed in float32 as the original.
func ExampleTimestepEmbedding() {
	emb := make([]float32, 2*8)
	diffusion.TimestepEmbedding(emb, []int32{0, 10}, 8)
	fmt.Printf("%.4f\n%.4f\n", emb[:8], emb[8:])
	// Output:
	// [0.0000 0.0000 0.0000 0.0000 1.0000 1.0000 1.0000 1.0000]
	// [-0.5440 0.4477 0.0215 0.0010 -0.8391 0.8942 0.9998 1.0000]
}
