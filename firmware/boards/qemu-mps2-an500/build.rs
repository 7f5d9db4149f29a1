fn main() {
    tinykd_board_build::embed_model("memory.x");
}
