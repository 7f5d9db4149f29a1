fn main() {
    // The smallest image: the shared kernels (see `Engine::Compiled`).
    tinykd_board_build::embed_model_with("memory.x", tinykd_board_build::Engine::Compiled);
}
