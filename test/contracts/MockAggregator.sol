// SPDX-License-Identifier: UNLICENSED
// A Chainlink AggregatorV3Interface stand-in for price tests: 8 decimals like the USD feeds; set() stores
// an answer and its updatedAt time and starts a new round.
pragma solidity ^0.8.0;

contract MockAggregator {
    uint80 private roundId;
    int256 private answer;
    uint256 private updatedAt;

    function decimals() external pure returns (uint8) { return 8; }
    function description() external pure returns (string memory) { return "TEST / USD"; }
    function version() external pure returns (uint256) { return 4; }

    function set(int256 newAnswer, uint256 newUpdatedAt) external {
        roundId += 1;
        answer = newAnswer;
        updatedAt = newUpdatedAt;
    }

    // (roundId, answer, startedAt, updatedAt, answeredInRound); startedAt is updatedAt here.
    function latestRoundData() external view returns (uint80, int256, uint256, uint256, uint80) {
        return (roundId, answer, updatedAt, updatedAt, roundId);
    }
}
